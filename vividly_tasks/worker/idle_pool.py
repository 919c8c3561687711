"""A worker bootstep: a stop with no task at hand ends the prefork pool at once.

Celery's warm stop closes and joins the pool: billiard's supervisor thread finishes a 0.8 s
sleep, each child gets a sentinel, runs its ``worker_process_shutdown`` hooks, and pauses a
second before it exits, and Celery's timer thread finishes a 0.5 s sleep: about 1.5 s for an
idle pool on every broker. With no request running or waiting for a child, a child holds no
task (with ``acks_late`` a message is acked only after its task ran, and the consumer, stopped
before the pool, no longer hands any over), so this step ends the idle children itself
(``child_shutdown.end_children``): each runs its ``worker_process_shutdown`` hooks, where
users flush exporters and close pools, and is killed as soon as they returned, skipping
billiard's pause; then it terminates the pool, and the Pool step finds nothing left to join.
With any request at hand it does nothing, and the warm stop lets those tasks finish (and the
children run their hooks) as before.

A cold stop (the job entrypoint's stop of an idle job, Celery's SIGQUIT) is the same story
through billiard's terminate: half a second waiting for the children's pipes to go quiet, then
a SIGTERM and a join per child. With nothing at hand the children are ended the same way just
before the Pool step terminates, and billiard finds them gone.

The hooks get until the deadline of the stop under way: the worker option
``vividly_stop_deadline`` (a callable giving a ``time.monotonic()`` time, or None), which the
``vividly-worker`` entrypoint sets to the end of its shutdown grace; otherwise
``child_shutdown_seconds`` from ``attach`` (default ``CHILD_SHUTDOWN_SECONDS``). A child still
in its hooks then is killed, and a warning names it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.concurrency.prefork import TaskPool
from celery.worker import state

from vividly_tasks.worker.child_shutdown import end_children

logger = logging.getLogger(__name__)

#: How long the children's shutdown hooks may take when no stop deadline was given (a plain
#: ``celery worker``): as long as the entrypoint's grace after SIGTERM, so that where SIGKILL
#: follows 10 s after SIGTERM (Cloud Run) a hook that hangs is cut off and named first.
CHILD_SHUTDOWN_SECONDS = 7.0
#: Where ``attach`` keeps its ``child_shutdown_seconds``, on the app it was given.
CHILD_SHUTDOWN_ATTRIBUTE = "_vividly_child_shutdown_seconds"

StopDeadline = Callable[[], float | None]


def nothing_at_hand() -> bool:
    """No request running in the pool, sent to it, or prefetched for it."""
    return not state.active_requests and not state.reserved_requests


class IdlePoolStop(bootsteps.StartStopStep):  # type: ignore[misc]
    """Ends an idle prefork pool at once on a warm or cold stop, its children's shutdown
    hooks run; inert with work at hand."""

    label = "Idle pool stop"
    # Steps stop in reverse start order: after Pool means stopped just before it.
    requires = ("celery.worker.components:Pool",)

    def __init__(
        self, w: Any, vividly_stop_deadline: StopDeadline | None = None, **kwargs: Any
    ) -> None:
        self.stop_deadline = vividly_stop_deadline
        super().__init__(w, **kwargs)

    def include_if(self, w: Any) -> bool:
        return True

    def create(self, w: Any) -> IdlePoolStop:
        return self

    def start(self, w: Any) -> None:
        pass

    def stop(self, w: Any) -> None:
        if not isinstance(w.pool, TaskPool) or not nothing_at_hand():
            return
        self._end_children(w)
        w.pool.terminate()

    def terminate(self, w: Any) -> None:
        # The Pool step terminates the pool itself, right after this.
        if isinstance(w.pool, TaskPool) and nothing_at_hand():
            self._end_children(w)

    def _end_children(self, w: Any) -> None:
        started = time.monotonic()
        ended = end_children(w.pool, self._deadline(w))
        logger.debug(
            "idle pool ended without a join: %d process(es) ran their shutdown, %d cut off, "
            "in %.3f s",
            len(ended.finished), len(ended.cut_off), time.monotonic() - started,
        )

    def _deadline(self, w: Any) -> float:
        deadline = self.stop_deadline() if self.stop_deadline is not None else None
        if deadline is None:
            seconds = getattr(w.app, CHILD_SHUTDOWN_ATTRIBUTE, CHILD_SHUTDOWN_SECONDS)
            deadline = time.monotonic() + seconds
        return deadline
