"""The job-mode bootstep: end the run when idle, after exactly N tasks, or at a runtime budget.

A consumer bootstep (see ``celery/worker/consumer/heart.py`` for the shape): it adds no loop of
its own. It counts messages at ``task_received``, in the consumer, before anything is
reserved, and cancels the task consumer when the N-th arrives, so the worker never takes an
N+1-th; a timer on the consumer's own event loop checks idleness and the runtime budget and
stops the worker through ``WorkerRun.request_stop`` (``celery.worker.state.should_stop``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.signals import task_received
from celery.worker import state as worker_state

from worker_entry.run import ExitReason, Limits, WorkerRun

logger = logging.getLogger(__name__)

#: How often the limits are checked; the idle and runtime exits are this precise.
TICK_SECONDS = 0.1
#: An ETA task due this soon counts as work at hand (the timer fires it within moments).
ETA_DUE_SOON_SECONDS = 1.0
#: Quiet time after the last message before "all N tasks done" is trusted: with a threaded
#: timer (brokers without an event loop) a tick can fall between ``task_received`` and
#: ``task_reserved`` of the N-th message.
SETTLE_SECONDS = 0.25


def has_work_at_hand(now_wall: float) -> bool:
    """Anything reserved, running, or scheduled for an ETA that is (nearly) due.

    An ETA further away does not keep the worker: if the job exits first, the message is
    given back unacknowledged and the next job holds it until it is due.
    """
    if worker_state.reserved_requests or worker_state.active_requests:
        return True
    for request in tuple(worker_state.scheduled_requests):
        eta = request.eta
        if eta is None or eta.timestamp() <= now_wall + ETA_DUE_SOON_SECONDS:
            return True
    return False


class JobLimits(bootsteps.StartStopStep):  # type: ignore[misc]
    """Stops a job-mode worker on idle, max tasks or max runtime; inert in service mode."""

    label = "Job limits"
    # After Tasks: the task consumer must exist for the step to cancel it.
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, vividly_run: WorkerRun | None = None, **kwargs: Any) -> None:
        self.run = vividly_run
        self.enabled = vividly_run is not None and vividly_run.mode == "job"
        self.received = 0
        self.taking_work = True
        self.last_activity = time.monotonic()
        #: Messages the transport settled on its own (``WorkerRun.transport_receipts``).
        self.settled_unseen = 0
        self._tick_entry: Any = None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        # Idle time counts from when the worker can receive, not from process start-up.
        self.last_activity = time.monotonic()
        # start() runs again after a reconnection: re-cancel a consumer that Tasks re-created.
        if not self.taking_work:
            self._stop_taking_work(c)
        task_received.connect(self._on_task_received, sender=c, weak=False)
        self._tick_entry = c.timer.call_repeatedly(TICK_SECONDS, self._tick, (c,))

    def stop(self, c: Any) -> None:
        task_received.disconnect(self._on_task_received, sender=c)
        if self._tick_entry is not None:
            self._tick_entry.cancel()
            self._tick_entry = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)

    @property
    def _limits(self) -> Limits:
        assert self.run is not None
        return self.run.limits

    def _on_task_received(self, sender: Any = None, **_: Any) -> None:
        self.last_activity = time.monotonic()
        self.received += 1
        max_tasks = self._limits.max_tasks
        if max_tasks is not None and self.received >= max_tasks and self.taking_work:
            logger.info(
                "max tasks reached: %d received, taking no more", self.received,
                extra={"max_tasks": max_tasks},
            )
            self._stop_taking_work(sender)

    def _stop_taking_work(self, c: Any) -> None:
        self.taking_work = False
        if c.task_consumer is not None:
            c.task_consumer.cancel()

    def _tick(self, c: Any) -> None:
        assert self.run is not None
        if self.run.stop_reason is not None:
            return
        now = time.monotonic()
        busy = has_work_at_hand(time.time())
        # A message the transport settled without Celery seeing it (dead-lettered unread,
        # unmatched) was received too: an idle exit means nothing received for the timeout,
        # which the dispatcher reads as proof that what was published before was taken.
        receipts = self.run.transport_receipts()
        settled = receipts["dead_lettered"] + receipts["dropped"] + receipts["unmatched"]
        if busy or settled != self.settled_unseen:
            self.settled_unseen = settled
            self.last_activity = now
        limits = self._limits
        if (
            limits.max_runtime_seconds is not None
            and self.run.runtime_seconds >= limits.max_runtime_seconds
        ):
            # On an event loop this tick runs between its polls: cancel now, so that the rest
            # of this turn delivers nothing new. A threaded timer (no event loop) must not
            # touch the channel the loop is draining; Celery's stop cancels it there.
            if self.taking_work and c.hub is not None:
                self._stop_taking_work(c)
            self.run.request_stop(ExitReason.MAX_RUNTIME)
        elif not self.taking_work and not busy and now - self.last_activity >= SETTLE_SECONDS:
            # All N tasks are done (or given back as far-off ETAs): nothing left to finish.
            self.run.request_stop(ExitReason.MAX_TASKS, nothing_at_hand=True)
        elif (
            limits.idle_timeout_seconds is not None
            and not busy
            and now - self.last_activity >= limits.idle_timeout_seconds
        ):
            self.run.request_stop(ExitReason.IDLE, nothing_at_hand=True)
