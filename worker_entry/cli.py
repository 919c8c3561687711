"""``vividly-worker job|service``: options from the environment (``WorkerSettings``), flags
override.

Every option defaults to "unset", so the environment variable of the same setting applies
unless the flag is given; the merged values are validated once, by the settings object.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from vividly_tasks.settings import SettingsError
from vividly_tasks.worker.logs import configure_process_logging
from worker_entry.exit_codes import RET_CONFIG
from worker_entry.launcher import WorkerOptions, run_worker
from worker_entry.run import ExitReason, Limits, Mode, WorkerRun, process_age_seconds
from worker_entry.settings import WorkerSettings
from worker_entry.summary import log_summary

F = TypeVar("F", bound=Callable[..., Any])
POOLS = ("prefork", "solo", "threads")


def worker_options(command: F) -> F:
    """The options that both modes share."""
    decorators = [
        click.option("--app", "-A", default=None,
                     help="Celery app to run, as `celery -A` takes it (module or module:attr) "
                          "[env WORKER_APP; default: vividly_tasks, the lesson app (the lessons "
                          "extra)]."),
        click.option("--concurrency", "-c", type=int, default=None,
                     help="Pool processes [env WORKER_CONCURRENCY; default: one per CPU]."),
        click.option("--pool", "-P", type=click.Choice(POOLS), default="prefork",
                     show_default=True, help="Celery execution pool."),
        click.option("--queues", "-Q", multiple=True,
                     help="Queues to consume, comma-separated as Celery takes them (repeatable) "
                          "[default: the app's task_queues or default queue; VIVIDLY_QUEUE for "
                          "the product app]."),
        click.option("--include", "-I", multiple=True,
                     help="Extra task modules to import, comma-separated (repeatable)."),
        click.option("--hostname", "-n", default=None,
                     help="Celery node name [default: MODE-PID@HOST]."),
        click.option("--shutdown-grace", type=float, default=None,
                     help="Seconds running tasks get to finish at a stop; SIGTERM caps it at "
                          "7 [env WORKER_SHUTDOWN_GRACE]."),
        click.option("--connect-timeout", type=float, default=None,
                     help="Seconds to reach the broker at start before exiting non-zero "
                          "[env WORKER_CONNECT_TIMEOUT]."),
        click.option("--loglevel", "-l", default=None, help="Log level [env LOG_LEVEL]."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Run a Celery worker (the product's, or any app's with -A) as a Cloud Run Job or as a
    long-lived service."""


@cli.command()
@click.option("--idle-timeout", type=float, default=None,
              help="Exit 0 after this many seconds without work [env WORKER_IDLE_TIMEOUT].")
@click.option("--max-tasks", type=int, default=None,
              help="Exit 0 after exactly this many tasks [env WORKER_MAX_TASKS].")
@click.option("--max-runtime", type=float, default=None,
              help="Stop taking work after this many seconds [env WORKER_MAX_RUNTIME].")
@worker_options
def job(**options: Any) -> None:
    """Drain the queue and exit: on idle, after N tasks, at the runtime budget, or SIGTERM."""
    started_at = time.monotonic() - process_age_seconds()
    settings = load_settings(options, started_at, "job")
    limits = Limits(
        idle_timeout_seconds=settings.worker_idle_timeout,
        max_tasks=settings.worker_max_tasks,
        max_runtime_seconds=settings.worker_max_runtime,
        shutdown_grace_seconds=settings.worker_shutdown_grace,
    )
    sys.exit(run_worker(common_options("job", limits, settings, options), settings,
                        started_at=started_at))


@cli.command()
@click.option("--port", type=int, default=None,
              help="HTTP port for /healthz and /readyz [env PORT].")
@click.option("--host", default=None,
              help="Interface for the HTTP listener [env WORKER_HEALTH_HOST].")
@worker_options
def service(**options: Any) -> None:
    """Run until SIGTERM, with liveness (/healthz) and readiness (/readyz) on $PORT."""
    started_at = time.monotonic() - process_age_seconds()
    settings = load_settings(options, started_at, "service")
    limits = Limits(shutdown_grace_seconds=settings.worker_shutdown_grace)
    worker = common_options("service", limits, settings, options)
    sys.exit(run_worker(worker, settings, started_at=started_at))


#: CLI option -> settings field it overrides.
OVERRIDES = {
    "app": "worker_app",
    "idle_timeout": "worker_idle_timeout",
    "max_tasks": "worker_max_tasks",
    "max_runtime": "worker_max_runtime",
    "shutdown_grace": "worker_shutdown_grace",
    "connect_timeout": "worker_connect_timeout",
    "concurrency": "worker_concurrency",
    "loglevel": "log_level",
    "port": "port",
    "host": "worker_health_host",
}


def load_settings(options: dict[str, Any], started_at: float, mode: Mode) -> WorkerSettings:
    """The environment's settings with the given flags on top; exit RET_CONFIG if invalid."""
    overrides = {
        field: options[option] for option, field in OVERRIDES.items()
        if options.get(option) is not None
    }
    try:
        return WorkerSettings(**overrides)
    except SettingsError as exc:
        configure_process_logging("json", "INFO")
        log_summary(WorkerRun(mode, Limits(), started_at=started_at),
                    reason=ExitReason.BAD_CONFIGURATION, exit_code=RET_CONFIG,
                    detail=str(exc))
        logging.shutdown()
        sys.exit(RET_CONFIG)


def common_options(mode: Mode, limits: Limits, settings: WorkerSettings,
                   options: dict[str, Any]) -> WorkerOptions:
    return WorkerOptions(
        mode=mode,
        app=settings.worker_app,
        limits=limits,
        connect_timeout_seconds=settings.worker_connect_timeout,
        pool=options["pool"],
        queues=names(options["queues"]),
        include=names(options["include"]),
        hostname=options["hostname"],
        health_host=settings.worker_health_host,
        port=settings.port,
    )


def names(values: Iterable[str]) -> tuple[str, ...]:
    """``-Q a,b -Q c`` as Celery reads it: every comma-separated name, in order."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def main() -> None:
    cli(prog_name="vividly-worker")
