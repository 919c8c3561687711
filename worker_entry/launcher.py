"""Run the ordinary Celery worker of the app with this run's bootsteps, and say how it ended.

Both modes share everything here: the app, the pool, the counting, the grace on a stop. The
only difference is which bootsteps are added: ``JobLimits`` for a job, ``ConsumingFlag`` and
``HealthServer`` for a service.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery import Celery
from celery.app.utils import find_app
from celery.signals import worker_shutting_down
from celery.utils.imports import import_from_cwd, symbol_by_name
from celery.utils.nodenames import default_nodename, host_format
from kombu.exceptions import OperationalError

from vividly_tasks import transport, worker
from vividly_tasks.transport.transport import Transport as PubSubTransport
from vividly_tasks.worker import tracing
from vividly_tasks.worker.logs import configure_process_logging
from vividly_tasks.worker.redaction import mask_url_password
from vividly_tasks.worker.startup_checks import refusal_of
from worker_entry.exit_codes import RET_CONFIG, RET_CONNECT, RET_ERROR, RET_OK
from worker_entry.health_server import ConsumingFlag, HealthConfig, HealthServer, HealthState
from worker_entry.job_limits import JobLimits
from worker_entry.run import (
    NORMAL_STOPS,
    SIGTERM_HARD_EXIT_SECONDS,
    ExitReason,
    Limits,
    Mode,
    WorkerRun,
)
from worker_entry.settings import WorkerSettings
from worker_entry.summary import log_summary

logger = logging.getLogger(__name__)

#: A job gives up on a broker lost mid-run after this many reconnection attempts (kombu
#: waits 2, 4, 6 s between them): a retried execution is better than one that hangs. A
#: service retries forever and reports the outage on /readyz instead.
JOB_RECONNECT_MAX_RETRIES = 3
#: Seconds a broker probe may take (readiness, and the post-mortem of a failed run).
PROBE_TIMEOUT_SECONDS = 3.0
#: Signals that end a run normally, as Celery names them in ``worker_shutting_down``.
STOP_SIGNALS = {"SIGTERM": ExitReason.SIGTERM, "SIGINT": ExitReason.SIGINT}


#: Where ``-A`` finds the lesson workload's app, built on first use (``vividly_tasks.app``).
LESSON_APP = "vividly_tasks"


@dataclass(frozen=True)
class WorkerOptions:
    """What the command line chose; everything else comes from the settings."""

    mode: Mode
    limits: Limits
    connect_timeout_seconds: float
    #: The Celery app to run, as ``celery -A`` takes it; the product app by default.
    app: str = LESSON_APP
    pool: str = "prefork"
    queues: Sequence[str] = ()
    include: Sequence[str] = ()
    hostname: str | None = None
    health_host: str = "0.0.0.0"  # noqa: S104 - Cloud Run routes to the container's interface
    port: int = 8080


class AppNotLoaded(Exception):
    """The ``-A`` app could not be imported or is not a Celery app."""


def load_app(name: str, settings: WorkerSettings) -> Celery:
    """The named app, on its own configuration.

    The app keeps its broker, backend, queues, routes and start-up checks; it gets the
    ``pubsub://`` scheme and, unless its owner attached or detached them, the worker
    behaviours (``vividly_tasks.worker.attach``, which leaves its own ``worker_consumer``
    alone) with LOG_FORMAT. The default, ``vividly_tasks``, is the lesson workload's app,
    which configures itself from its own settings.
    """
    transport.register()
    try:
        app = find_app(name, symbol_by_name=symbol_by_name, imp=import_from_cwd)
    except Exception as exc:
        raise AppNotLoaded(f"cannot load the Celery app {name!r}: {exc!r}") from exc
    if not isinstance(app, Celery):
        raise AppNotLoaded(f"{name!r} is a {type(app).__name__}, not a Celery app")
    if not worker.was_attached(app):  # the app's owner chose; else the entrypoint's own
        worker.attach(app, log_format=settings.log_format)
    return app


def build_app(settings: WorkerSettings, mode: Mode, name: str = LESSON_APP) -> Celery:
    app = load_app(name, settings)
    app.conf.update(
        broker_connection_max_retries=JOB_RECONNECT_MAX_RETRIES if mode == "job" else None,
    )
    if settings.worker_prefetch_multiplier is not None:
        app.conf.worker_prefetch_multiplier = settings.worker_prefetch_multiplier
    # OTEL_TRACES_EXPORTER set (not "none"): OpenTelemetry for this worker and its children.
    try:
        tracing.configure_if_requested(app)
    except ImportError as exc:  # the extra is missing, or the exporter named is
        raise AppNotLoaded(f"tracing cannot start: {exc}") from exc
    app.set_default()
    # What exists now lives as long as the worker: out of the cyclic collector's reach, the
    # prefork children stop writing to the pages they share with this process (Python's own
    # advice before fork()), and the exit does not walk it.
    gc.freeze()
    return app


def check_broker(app: Celery, timeout_seconds: float) -> None:
    """Connect, retrying for at most ``timeout_seconds``; raise if the broker never answers.

    The attempt runs in a thread that is abandoned at the deadline, because a transport's
    client library may retry inside one connect call for longer than asked.
    """
    failure: list[BaseException] = []

    def on_error(exc: Exception, interval: float) -> None:
        logger.warning("broker not reachable yet: %r; retrying in %.1f s", exc, interval)

    def attempt() -> None:
        try:
            with app.connection_for_read() as connection:
                connection.ensure_connection(
                    errback=on_error, max_retries=None, interval_start=0.5,
                    interval_step=0.5, interval_max=2.0, timeout=timeout_seconds,
                )
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=attempt, name="vividly-broker-check", daemon=True)
    thread.start()
    thread.join(timeout_seconds + PROBE_TIMEOUT_SECONDS)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout_seconds:g} s")
    if failure:
        raise failure[0]


def broker_error_kind(app: Celery, exc: Exception) -> ExitReason:
    """Connection errors mean "unreachable"; anything else (unknown scheme, bad URL) is config."""
    try:
        with app.connection_for_read() as connection:
            errors = (*connection.connection_errors, *connection.recoverable_connection_errors)
    except Exception:
        return ExitReason.BAD_CONFIGURATION
    if isinstance(exc, (*errors, OperationalError, OSError, TimeoutError)):
        return ExitReason.BROKER_UNREACHABLE
    return ExitReason.BAD_CONFIGURATION


def run_worker(options: WorkerOptions, settings: WorkerSettings, *, started_at: float) -> int:
    """Run one worker to its end; log the summary line; return the exit code."""
    configure_process_logging(settings.log_format, settings.log_level)
    run = WorkerRun(options.mode, options.limits, started_at=started_at)
    try:
        app = build_app(settings, options.mode, options.app)
    except AppNotLoaded as exc:
        log_summary(run, reason=ExitReason.BAD_CONFIGURATION, exit_code=RET_CONFIG,
                    detail=str(exc))
        return RET_CONFIG

    try:
        check_broker(app, options.connect_timeout_seconds)
    except Exception as exc:
        reason = broker_error_kind(app, exc)
        code = RET_CONNECT if reason is ExitReason.BROKER_UNREACHABLE else RET_CONFIG
        detail = (
            f"broker {mask(app)} not reachable within "
            f"{options.connect_timeout_seconds:g} s: {exc!r}"
            if code == RET_CONNECT
            else f"broker {mask(app)} cannot be used: {exc!r}"
        )
        log_summary(run, reason=reason, exit_code=code, detail=detail)
        return code

    if options.mode == "job":
        run.missing_queues = missing_queues(app, options.queues)
    worker = app.Worker(**worker_kwargs(app, options, run, settings))
    on_shutting_down = partial(note_stop_signal, run)
    run.on_stopping = partial(hasten_stop, app, worker)
    run.on_overdue = partial(exit_overdue, run)

    worker_shutting_down.connect(on_shutting_down, weak=False)
    run.counters.connect()
    run.start_grace_watch()
    try:
        worker.start()
    finally:
        run.close()
        run.counters.disconnect()
        worker_shutting_down.disconnect(on_shutting_down)
    code, end_reason, end_detail = outcome(app, run, worker.exitcode)
    log_summary(run, reason=end_reason, exit_code=code, detail=end_detail)
    return code


def missing_queues(app: Celery, queues: Sequence[str]) -> list[str]:
    """The Pub/Sub subscriptions of the queues this worker will consume that do not exist yet.

    A producer's publish declares its queue, so a job that finds its queue missing waits on
    a name nobody sends to (a wrong queue name or prefix), and its idle exit says so. Only
    for our transport: on Redis an empty queue does not exist either.
    """
    names = list(queues) or list(app.amqp.queues)
    with app.connection_for_read() as connection:
        if not isinstance(connection.transport, PubSubTransport):
            return []
        channel = connection.default_channel
        missing = []
        for name in names:
            try:
                channel.queue_declare(queue=name, passive=True)
            except connection.channel_errors:
                missing.append(channel.subscription_spec(name, name).path)
        if missing:
            logger.warning(
                "consumed queue(s) do not exist, nothing was ever sent to them: %s (queue "
                "names and the prefix %r must match the producers')",
                ", ".join(missing), channel.prefix,
            )
        return missing


def note_stop_signal(run: WorkerRun, sig: str = "", **_: Any) -> None:
    """Celery's own SIGTERM/SIGINT handler started a warm shutdown: bound it by the budget."""
    reason = STOP_SIGNALS.get(sig)
    if reason is not None:
        run.note_stop(reason, run.limits.sigterm_grace_seconds, SIGTERM_HARD_EXIT_SECONDS)


def hasten_stop(app: Celery, worker: Any) -> None:
    """Without an event loop (the embedded filesystem broker) Celery checks its stop flag only
    between 2-s drains of the broker, and drains once more before it acts. Its own
    remote-control shutdown, sent to this worker alone, arrives within one polling interval
    instead, and stops the loop from inside."""
    if not worker.use_eventloop:
        with app.connection_for_write() as connection:
            app.control.shutdown(destination=[worker.hostname], connection=connection)


def exit_overdue(run: WorkerRun) -> None:
    """Still here at the end of the budget: a broker call is stuck past its timeout. Log the
    summary and go; what was unacknowledged comes back when its lease or visibility ends."""
    reason = run.stop_reason or ExitReason.WORKER_ERROR
    code = RET_OK if reason in NORMAL_STOPS else RET_ERROR
    log_summary(run, reason=reason, exit_code=code,
                detail="forced exit: the worker did not stop in time")
    logging.shutdown()
    os._exit(code)


def worker_kwargs(
    app: Celery, options: WorkerOptions, run: WorkerRun, settings: WorkerSettings
) -> dict[str, Any]:
    """Arguments for ``app.Worker``; the ``vividly_*`` ones reach our bootsteps."""
    app.steps["consumer"].add(JobLimits)
    app.steps["consumer"].add(ConsumingFlag)
    app.steps["worker"].add(HealthServer)
    kwargs: dict[str, Any] = {
        "hostname": host_format(
            default_nodename(options.hostname or f"{options.mode}-{os.getpid()}@%h")
        ),
        "pool_cls": options.pool,
        "loglevel": settings.log_level,
        "include": list(options.include),
        "queues": list(options.queues) or None,
        # The banner is plain text on stdout; Cloud Logging wants one JSON object a line.
        "quiet": True,
        # A job exits in seconds: mingle (1 s spent asking other workers for revoked ids at
        # start-up) and gossip buy it nothing. A service keeps Celery's defaults.
        "without_mingle": options.mode == "job",
        "without_gossip": options.mode == "job",
        "vividly_run": run,
        # The idle pool stop (vividly_tasks.worker) lets the children's shutdown hooks run
        # until the grace of the stop is over.
        "vividly_stop_deadline": run.stop_deadline,
    }
    if settings.worker_concurrency is not None:
        kwargs["concurrency"] = settings.worker_concurrency
    if options.mode == "service":
        kwargs["vividly_health"] = HealthConfig(
            options.health_host, options.port, lambda: check_broker_once(app)
        )
        kwargs["vividly_health_state"] = HealthState()
    return kwargs


def check_broker_once(app: Celery) -> None:
    with app.connection_for_read(connect_timeout=PROBE_TIMEOUT_SECONDS) as connection:
        connection.ensure_connection(max_retries=0, timeout=PROBE_TIMEOUT_SECONDS)


def outcome(
    app: Celery, run: WorkerRun, worker_exitcode: Any
) -> tuple[int, ExitReason, str | None]:
    """Exit code, reason and detail of a run whose worker has returned."""
    if run.stop_reason is not None and run.stop_reason in NORMAL_STOPS:
        if (run.stop_reason is ExitReason.IDLE and run.missing_queues
                and not run.counters.received):
            return RET_OK, ExitReason.QUEUE_MISSING, (
                f"idle on queue(s) that did not exist at start: "
                f"{', '.join(run.missing_queues)}; check the queue names and PUBSUB_PREFIX"
            )
        return RET_OK, run.stop_reason, None
    refusal = refusal_of(app)
    if refusal is not None:
        code = refusal.exit_code if refusal.exit_code in (RET_CONFIG, RET_CONNECT) else RET_ERROR
        reason = (ExitReason.BAD_CONFIGURATION if code == RET_CONFIG
                  else ExitReason.STARTUP_REFUSED)
        return code, reason, refusal.detail
    if worker_exitcode in (0, None):
        # Celery stopped itself cleanly (e.g. ``celery control shutdown``).
        return RET_OK, ExitReason.SHUTDOWN, None
    try:
        check_broker(app, PROBE_TIMEOUT_SECONDS)
    except Exception as exc:
        return RET_CONNECT, ExitReason.BROKER_UNREACHABLE, f"broker connection lost: {exc!r}"
    return RET_ERROR, ExitReason.WORKER_ERROR, f"worker exited with {worker_exitcode!r} (see log)"


def mask(app: Celery) -> str:
    """The broker URL without its password (Kombu masks it)."""
    try:
        with app.connection_for_read() as connection:
            return str(connection.as_uri())
    except Exception:  # an unknown scheme cannot even be parsed into a connection
        return str(mask_url_password(app.conf.broker_url))
