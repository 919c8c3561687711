"""The worker behaviours of vividly-tasks, for any Celery app: ``attach(app)``.

Importing this package changes nothing. ``attach`` adds to one app, and only to it:

* **guarded consumer** (``guarded_consumer.py``): a task message Celery cannot take (not
  protocol 2, malformed headers or body, a refused content type, an unregistered task) is
  rejected with the reason, so Pub/Sub dead-letters it, instead of stopping the worker. Set
  through Celery's ``worker_consumer`` as a default, so an app's own setting wins.
* **task requests** (``requests.py``): ``Reject(reason, requeue=False)`` puts the reason on
  the dead-letter copy, and Pub/Sub's metadata (``delivery_attempt``, ``pubsub_message_id``,
  ...) reaches ``self.request``.
* **idle pool stop** (``idle_pool.py``, ``child_shutdown.py``): a stop with no task at hand
  ends the prefork pool at once instead of joining it (~1.5 s saved per stop); each child
  still runs its ``worker_process_shutdown`` hooks first, for up to ``child_shutdown_seconds``
  (or the ``vividly-worker`` entrypoint's shutdown grace), and is killed, named in a warning,
  if they take longer.
* **structured logs** (``logs.py``): the app's worker logs as one JSON object a line with
  Cloud Logging's ``severity`` (``log_format="json"``), or text; ``None`` leaves them alone.
* **secrets masked** (``redaction.py``): the passwords of the app's broker and result backend
  URLs and the ``secrets`` given (values, or a callable read as the worker starts) become
  ``****`` in its worker's log lines and in the dead-letter reasons it hands the broker.

``detach(app)`` takes all of it off again, the consumer default included (an app's own
``worker_consumer`` is never touched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vividly_tasks.worker.idle_pool import (
    CHILD_SHUTDOWN_ATTRIBUTE,
    CHILD_SHUTDOWN_SECONDS,
    IdlePoolStop,
)
from vividly_tasks.worker.logs import LogFormat, StructuredLogs
from vividly_tasks.worker.redaction import REDACTOR, SecretSource, app_redactor
from vividly_tasks.worker.requests import TaskRequests

GUARDED_CONSUMER = "vividly_tasks.worker.guarded_consumer:GuardedConsumer"
#: Where ``attach`` keeps what it connected, on the app it was attached to.
ATTACHED = "_vividly_worker_behaviours"
#: Where ``attach`` keeps the defaults it added: Celery chains that very mapping into the
#: app's configuration, so emptying it takes the default off again.
ADDED_DEFAULTS = "_vividly_worker_defaults"


def attach(
    app: Any,
    *,
    guard_messages: bool = True,
    task_requests: bool = True,
    idle_pool_stop: bool = True,
    child_shutdown_seconds: float = CHILD_SHUTDOWN_SECONDS,
    log_format: LogFormat | Callable[[], LogFormat] | None = "json",
    secrets: SecretSource = (),
) -> None:
    """Add the worker behaviours to ``app``'s workers (and to no other app's).

    Reads no configuration now: a lazily configured app stays lazy. Calling it again
    replaces what an earlier call attached.
    """
    detach(app)
    if guard_messages:
        defaults = {"worker_consumer": GUARDED_CONSUMER}
        app.add_defaults(defaults)
        setattr(app, ADDED_DEFAULTS, defaults)
    if task_requests:
        app.steps["worker"].add(TaskRequests)
    if idle_pool_stop:
        app.steps["worker"].add(IdlePoolStop)
        setattr(app, CHILD_SHUTDOWN_ATTRIBUTE, child_shutdown_seconds)
    redactor = app_redactor(app, secrets)
    setattr(app, REDACTOR, redactor)
    logs = None
    if log_format is not None:
        logs = StructuredLogs(app, log_format, redactor)
        logs.connect()
    setattr(app, ATTACHED, logs)


def was_attached(app: Any) -> bool:
    """Whether ``attach`` (or ``detach``) was called on ``app``: its owner chose."""
    return hasattr(app, ATTACHED)


def detach(app: Any) -> None:
    """Take off what ``attach`` added."""
    getattr(app, ADDED_DEFAULTS, {}).clear()
    app.steps["worker"].discard(TaskRequests)
    app.steps["worker"].discard(IdlePoolStop)
    if hasattr(app, CHILD_SHUTDOWN_ATTRIBUTE):
        delattr(app, CHILD_SHUTDOWN_ATTRIBUTE)
    logs: StructuredLogs | None = getattr(app, ATTACHED, None)
    if logs is not None:
        logs.disconnect()
    setattr(app, ATTACHED, None)
    if hasattr(app, REDACTOR):
        delattr(app, REDACTOR)


__all__ = ["attach", "detach", "was_attached"]
