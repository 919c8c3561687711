"""The entrypoint's settings (``WORKER_*``, ``PORT``, ``LOG_*``): what a ``vividly-worker`` run
reads from the environment; its flags override them (``worker_entry.cli``)."""

from __future__ import annotations

import dataclasses

import click

from vividly_tasks.settings import LogSettings, setting


@dataclasses.dataclass(frozen=True, init=False)
class WorkerSettings(LogSettings):
    """How ``vividly-worker job|service`` runs an app (any app: none of these is the app's)."""

    worker_app: str = setting(
        "vividly_tasks",
        "Celery app that vividly-worker runs (module or module:attr, as -A); the default is "
        "the lesson workload's app (the lessons extra).")
    worker_concurrency: int | None = setting(
        None, "Pool processes; unset means the app's setting, else one per CPU.",
        kind=click.IntRange(min=1))
    worker_prefetch_multiplier: int | None = setting(
        None, "Messages leased per pool process; unset means the app's setting (the lesson "
        "app's is 1).", kind=click.IntRange(min=1))
    # Job-mode defaults for Cloud Run (see docs/entrypoint.md): an empty queue costs ~10 s since
    # delivery is event-driven; the runtime budget ends a backlog run cleanly before Cloud
    # Run's default 600 s task timeout would kill and retry it.
    worker_idle_timeout: float = setting(
        10.0, "Job mode: exit after this many seconds without work.",
        kind=click.FloatRange(min=0, min_open=True))
    worker_max_tasks: int | None = setting(
        None, "Job mode: exit after this many tasks; unset = no limit.",
        kind=click.IntRange(min=1))
    worker_max_runtime: float | None = setting(
        540.0, "Job mode: stop taking work after this many seconds.",
        kind=click.FloatRange(min=0, min_open=True))
    worker_shutdown_grace: float = setting(
        8.0, "Seconds to finish running tasks at a stop (Cloud Run gives 10 s on SIGTERM).",
        kind=click.FloatRange(min=0))
    worker_connect_timeout: float = setting(
        10.0, "Seconds to reach the broker at start, then exit non-zero (Cloud Run retries).",
        kind=click.FloatRange(min=0, min_open=True))
    worker_health_host: str = setting(
        "0.0.0.0",  # noqa: S104 - Cloud Run routes to the container's own interface
        "Service mode: interface of the /healthz and /readyz listener.")
    port: int = setting(8080, "Service mode HTTP port.", kind=click.IntRange(1, 65535))
