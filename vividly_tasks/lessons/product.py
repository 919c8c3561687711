"""The product app's factory: one app, configured from the one settings object.

Building it reads no environment (the settings are read on first use of ``app.conf``) and
touches no other app: its worker behaviours are attached to it alone.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery, Task

from vividly_tasks import transport, worker
from vividly_tasks.lessons import startup
from vividly_tasks.lessons.settings import Settings, secret_values
from vividly_tasks.worker import plain_message_tasks
from vividly_tasks.worker.requests import TaskRequest

TASK_MODULES = ["vividly_tasks.lessons.tasks", "vividly_tasks.lessons.course_tasks"]


class VividlyCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries the settings it was built from."""

    def __init__(self, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        self._given_settings = settings
        super().__init__(*args, **kwargs)

    @cached_property
    def settings(self) -> Settings:
        """Read from the environment on first use, not at import (``celery -A`` imports us)."""
        return self._given_settings or Settings()


class VividlyTask(Task):  # type: ignore[misc]
    """Base class of every task of the app."""

    Request = TaskRequest

    def before_start(self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # A plain Pub/Sub message that does not fit the signature is rejected with the reason.
        plain_message_tasks.check_arguments(self, args, kwargs)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration derived from the settings."""
    settings.ensure_local_dirs()
    queue = settings.default_queue
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": settings.broker_transport_options(),
        "broker_connection_retry_on_startup": True,
        "result_backend": settings.effective_result_backend,
        "result_extended": True,
        # JSON only: a message claiming pickle is refused, never deserialized.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task ran, and give the message back if its process died, so a crash
        # never loses work; the tasks are idempotent for exactly this reason.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier or 1,
        "worker_concurrency": settings.worker_concurrency,
        "task_default_queue": queue,
        "task_routes": {"vividly.*": {"queue": queue}},
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": True,
        "worker_log_format": "%(message)s",
        "worker_task_log_format": "%(message)s",
        "vividly_settings": settings.redacted(),
        "task_queues": consumed_queues(settings),
    }


def consumed_queues(settings: Settings) -> dict[str, dict[str, str]] | None:
    """What workers consume (unless told ``-Q``): the default queue and every queue bound to a
    task for plain messages, each with its own direct exchange as Celery would create it; None
    (Celery's default: the default queue) when nothing is bound."""
    bound = [name for name in settings.plain_message_tasks if name != settings.default_queue]
    if not bound:
        return None
    return {name: {"exchange": name, "exchange_type": "direct", "routing_key": name}
            for name in [settings.default_queue, *bound]}


def create_app(settings: Settings | None = None) -> VividlyCelery:
    """Build the app; configuration is resolved lazily from ``settings`` (or the environment)."""
    transport.register()
    app = VividlyCelery(
        "vividly_tasks", settings=settings, include=TASK_MODULES,
        task_cls="vividly_tasks.lessons.product:VividlyTask",
    )
    app.add_defaults(lambda: celery_config(app.settings))
    # A malformed task message is dead-lettered with its reason instead of stopping the
    # worker; an idle worker's stop skips billiard's ~1.5 s join; logs as LOG_FORMAT says;
    # every secret of the settings masked in its logs and dead-letter reasons.
    worker.attach(app, log_format=lambda: app.settings.log_format,
                  secrets=lambda: secret_values(app.settings))
    # A worker without its tools, settings, database or storage refuses to start.
    startup.register(app)
    return app
