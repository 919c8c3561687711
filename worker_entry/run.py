"""What one run of the worker knows: its limits, its task counts, and why it stopped.

The launcher creates one ``WorkerRun`` and hands it to the bootsteps through the worker's
options (Celery passes every ``Worker(**options)`` keyword to each step's ``__init__``), so the
steps share it without global state, and the launcher reads it back for the summary.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from celery.signals import (
    task_failure,
    task_received,
    task_rejected,
    task_retry,
    task_success,
    task_unknown,
)
from celery.worker import state as worker_state

from vividly_tasks.transport import receipts
from worker_entry.exit_codes import RET_OK

logger = logging.getLogger(__name__)

Mode = Literal["job", "service"]

#: Cloud Run sends SIGKILL 10 s after SIGTERM; keep 3 s of that for the cold shutdown and the
#: process exit (the prefork pool alone takes 1-2 s to stop on a busy machine).
SIGTERM_BUDGET_SECONDS = 10.0
COLD_SHUTDOWN_RESERVE_SECONDS = 3.0
#: After SIGTERM, a worker still alive at this point (a broker call that ignores its timeout)
#: exits by itself, summary first, rather than be SIGKILLed without one.
SIGTERM_HARD_EXIT_SECONDS = 9.5
#: After another stop's grace, how long the cold shutdown may take before the same hard exit.
COLD_SHUTDOWN_LIMIT_SECONDS = 10.0
#: An idle pool's children must be done with their shutdown hooks this long before the grace
#: ends: then the grace watch sends SIGQUIT, and Celery's handler joins the pool from the main
#: thread, which would wait on a hook that hangs until the hard exit.
CHILD_HOOKS_MARGIN_SECONDS = 0.5


def process_age_seconds() -> float:
    """Seconds since this process started (Linux ``/proc``), 0.0 where that is unknown.

    The runtime budget and the summary's runtime count from process start, as Cloud Run's task
    timeout does, not from when the imports were done (1-2 s later).
    """
    try:
        # Fields after the command name; starttime is field 22 of proc(5), in clock ticks.
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class ExitReason(enum.StrEnum):
    IDLE = "idle"
    MAX_TASKS = "max_tasks"
    MAX_RUNTIME = "max_runtime"
    SIGTERM = "sigterm"
    SIGINT = "sigint"
    BROKER_UNREACHABLE = "broker_unreachable"
    #: A start-up check of the app refused: a service it needs did not answer
    #: (``vividly_tasks.worker.startup_checks``; a configuration refusal is BAD_CONFIGURATION).
    STARTUP_REFUSED = "startup_refused"
    BAD_CONFIGURATION = "bad_configuration"
    WORKER_ERROR = "worker_error"
    #: Celery stopped by itself without error, e.g. ``celery control shutdown``.
    SHUTDOWN = "shutdown"
    #: Idle, having received nothing, on a queue that did not exist when the job started:
    #: most likely a name or prefix that no producer uses (the summary names the queue).
    QUEUE_MISSING = "queue_missing"


#: Reasons that are a normal end of a run (exit code 0).
NORMAL_STOPS = frozenset(
    {ExitReason.IDLE, ExitReason.MAX_TASKS, ExitReason.MAX_RUNTIME, ExitReason.SIGTERM,
     ExitReason.SIGINT, ExitReason.SHUTDOWN, ExitReason.QUEUE_MISSING}
)


@dataclass(frozen=True)
class Limits:
    """Job-mode limits; ``None`` means no such limit (service mode has none at all)."""

    idle_timeout_seconds: float | None = None
    max_tasks: int | None = None
    max_runtime_seconds: float | None = None
    shutdown_grace_seconds: float = 8.0

    @property
    def sigterm_grace_seconds(self) -> float:
        """Grace after SIGTERM: the configured one, capped so the process is gone within 10 s."""
        cap = SIGTERM_BUDGET_SECONDS - COLD_SHUTDOWN_RESERVE_SECONDS
        return min(self.shutdown_grace_seconds, cap)


class TaskCounters:
    """Task outcomes, counted in the process that ran the task and read in the main process.

    Celery fires ``task_success`` / ``task_failure`` / ``task_retry`` where the task runs: a
    prefork child. The counts live in shared memory created before the pool forks, so the
    children's increments are visible to the main process at exit (and the solo/threads pools,
    which run tasks in the main process, use the same counters).
    """

    FIELDS = ("succeeded", "failed", "retried")

    def __init__(self) -> None:
        self._values = multiprocessing.get_context("fork").Array("q", len(self.FIELDS))
        #: Messages handed to this worker (counted in the main process, at ``task_received``),
        #: and those its consumer refused without running them (unregistered task, malformed
        #: message: dead-lettered with the reason), which count as received too.
        self.received = 0
        self.refused = 0

    def connect(self) -> None:
        """Connect before the pool forks, so that the children inherit the receivers."""
        task_received.connect(self._on_received, weak=False)
        task_unknown.connect(self._on_refused, weak=False)
        task_rejected.connect(self._on_refused, weak=False)
        task_success.connect(self._on_success, weak=False)
        task_failure.connect(self._on_failure, weak=False)
        task_retry.connect(self._on_retry, weak=False)

    def disconnect(self) -> None:
        task_received.disconnect(self._on_received)
        task_unknown.disconnect(self._on_refused)
        task_rejected.disconnect(self._on_refused)
        task_success.disconnect(self._on_success)
        task_failure.disconnect(self._on_failure)
        task_retry.disconnect(self._on_retry)

    def snapshot(self) -> dict[str, int]:
        with self._values.get_lock():
            return dict(zip(self.FIELDS, self._values[:], strict=True))

    def _add(self, field: str) -> None:
        with self._values.get_lock():
            self._values[self.FIELDS.index(field)] += 1

    def _on_received(self, **_: Any) -> None:
        self.received += 1

    def _on_refused(self, **_: Any) -> None:
        self.received += 1
        self.refused += 1

    def _on_success(self, **_: Any) -> None:
        self._add("succeeded")

    def _on_failure(self, **_: Any) -> None:
        self._add("failed")

    def _on_retry(self, **_: Any) -> None:
        self._add("retried")


class WorkerRun:
    """One run: started at process start, stopped once, for the first reason that came."""

    def __init__(self, mode: Mode, limits: Limits, *, started_at: float | None = None) -> None:
        self.mode = mode
        self.limits = limits
        #: ``time.monotonic()`` at process start, so runtime includes the worker's start-up.
        self.started_at = time.monotonic() if started_at is None else started_at
        self.counters = TaskCounters()
        #: What the Pub/Sub transport of this process settled on its own before this run.
        self._receipts_at_start = receipts.for_this_process().snapshot()
        #: Pub/Sub subscriptions of consumed queues that did not exist at start (job mode).
        self.missing_queues: list[str] = []
        self.stop_reason: ExitReason | None = None
        #: The stop came with nothing reserved, running or due (a cold stop of an idle pool).
        self.stopped_with_nothing_at_hand = False
        self.finished = threading.Event()
        #: Called by the grace watch as a stop begins (not in a signal handler).
        self.on_stopping: Callable[[], None] | None = None
        #: Called by the grace watch if the worker overstays its stop (logs, then exits).
        self.on_overdue: Callable[[], None] | None = None
        self._stop_requested = threading.Event()
        self._grace_seconds = limits.shutdown_grace_seconds
        self._hard_exit_after_seconds = self._grace_seconds + COLD_SHUTDOWN_LIMIT_SECONDS
        self._stop_requested_at = 0.0
        self._lock = threading.Lock()

    @property
    def runtime_seconds(self) -> float:
        return time.monotonic() - self.started_at

    def transport_receipts(self) -> dict[str, int]:
        """What the Pub/Sub transport settled on its own during this run (receipts.py):
        messages it dead-lettered or dropped unread, and copies no binding matched."""
        now = receipts.for_this_process().snapshot()
        return {name: count - self._receipts_at_start[name] for name, count in now.items()}

    def first_released_due_at(self) -> float | None:
        """The earliest ETA (``time.time()``) of the delayed tasks this run gave back
        unstarted, None if it gave none back."""
        return receipts.for_this_process().first_released_due_at(
            self._receipts_at_start["released_delayed"])

    def request_stop(self, reason: ExitReason, *, nothing_at_hand: bool = False) -> bool:
        """Stop the worker the way Celery's own signal handlers do.

        Normally a warm shutdown (``state.should_stop``): the consumer loop raises
        ``WorkerShutdown`` at its next turn, Celery stops consuming, lets the running tasks
        finish and gives back what was only prefetched; the grace watch bounds that by the
        shutdown grace. With ``nothing_at_hand`` (nothing reserved, running or due: an idle
        job, or one whose N tasks are all done) there is nothing to finish, so it is Celery's
        cold shutdown (``state.should_terminate``), which skips the prefork pool's second of
        sleep per child; a message that slips in meanwhile is still given back, unacked.
        Returns False if a stop was already under way.
        """
        grace = self.limits.shutdown_grace_seconds
        if not self.note_stop(reason, grace, grace + COLD_SHUTDOWN_LIMIT_SECONDS):
            return False
        if nothing_at_hand:
            self.stopped_with_nothing_at_hand = True
            if worker_state.should_terminate is None:
                worker_state.should_terminate = RET_OK
        elif worker_state.should_stop is None:
            worker_state.should_stop = RET_OK
        return True

    def note_stop(
        self, reason: ExitReason, grace_seconds: float, hard_exit_after_seconds: float
    ) -> bool:
        """Record why the worker stops (the first reason wins) and start the grace clock.

        Safe in a signal handler (Celery's SIGTERM handler reaches it through
        ``worker_shutting_down``): it only sets fields and an event; logging and the clock
        run in the grace-watch thread.
        """
        with self._lock:
            if self.stop_reason is not None:
                return False
            self.stop_reason = reason
            self._grace_seconds = grace_seconds
            self._hard_exit_after_seconds = hard_exit_after_seconds
            self._stop_requested_at = time.monotonic()
        self._stop_requested.set()
        return True

    def stop_deadline(self) -> float | None:
        """``time.monotonic()`` by which an idle pool's children must have run their shutdown
        hooks: just before the grace of the stop under way ends. None before a stop."""
        with self._lock:
            if self.stop_reason is None:
                return None
            grace = max(0.0, self._grace_seconds - CHILD_HOOKS_MARGIN_SECONDS)
            return self._stop_requested_at + grace

    def start_grace_watch(self) -> None:
        """Start the thread that enforces the grace; before the worker starts, not in a handler."""
        threading.Thread(target=self._watch_grace, name="vividly-grace", daemon=True).start()

    def _watch_grace(self) -> None:
        """After the grace, hand over to Celery's cold shutdown (its SIGQUIT handler).

        That handler stops the task consumer and cancels the tasks still running; their
        messages are unacknowledged (``task_acks_late``), so the broker gets them back when
        the connection closes, moments later: released, not lost.
        """
        self._stop_requested.wait()
        if self.finished.is_set():
            return
        grace = self._grace_seconds
        logger.info(
            "worker stopping: %s", self.stop_reason,
            extra={"exit_reason": str(self.stop_reason), "grace_seconds": grace},
        )
        if self.on_stopping is not None:
            try:
                self.on_stopping()
            except Exception:  # the stop flag is set anyway; this only hastens it
                logger.exception("could not hasten the stop")
        if self.finished.wait(max(0.0, self._stop_requested_at + grace - time.monotonic())):
            return
        logger.warning(
            "shutdown grace of %.1f s is over: cancelling running tasks, releasing their messages",
            grace,
        )
        os.kill(os.getpid(), signal.SIGQUIT)
        overdue_at = self._stop_requested_at + self._hard_exit_after_seconds
        if self.finished.wait(max(0.0, overdue_at - time.monotonic())):
            return
        logger.error("worker did not stop within %.1f s: exiting now",
                     self._hard_exit_after_seconds)
        if self.on_overdue is not None:
            self.on_overdue()

    def close(self) -> None:
        """The worker has returned: stand the grace watch down."""
        self.finished.set()
        self._stop_requested.set()
