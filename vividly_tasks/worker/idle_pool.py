"""A worker bootstep: a stop with no task at hand ends the prefork pool at once.

Celery's warm stop closes and joins the pool: billiard's supervisor thread finishes a 0.8 s
sleep, each child gets a sentinel and tears down its interpreter, and Celery's timer thread
finishes a 0.5 s sleep, about 1.5 s for an idle pool on every broker. With no request running
or waiting for a child, a child holds nothing a kill could lose (with ``acks_late`` a message is
acked only after its task ran, and the consumer, stopped before the pool, no longer hands any
over), so this step SIGKILLs and reaps the idle children and terminates the pool instead; the
Pool step then finds nothing left to join. With any request at hand it does nothing, and the
warm stop lets those tasks finish as before.

A cold stop (the job entrypoint's stop of an idle job, Celery's SIGQUIT) is the same story
through billiard's terminate: half a second waiting for the children's pipes to go quiet, then
a SIGTERM and a join per child. With nothing at hand the children are SIGKILLed just before
the Pool step terminates, and billiard finds them gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

from celery import bootsteps
from celery.concurrency.prefork import TaskPool
from celery.worker import state

logger = logging.getLogger(__name__)

#: A SIGKILLed process is gone within milliseconds; this only bounds a surprise.
REAP_TIMEOUT_SECONDS = 1.0


def kill_idle_children(pool: Any) -> int:
    """SIGKILL and reap a billiard pool's children; how many there were."""
    processes = list(getattr(getattr(pool, "_pool", None), "_pool", None) or [])
    for process in processes:
        with contextlib.suppress(OSError, TypeError):
            os.kill(process.pid, signal.SIGKILL)
    for process in processes:  # reaped, so billiard skips waiting on their pipes
        with contextlib.suppress(Exception):
            process.join(REAP_TIMEOUT_SECONDS)
    return len(processes)


def nothing_at_hand() -> bool:
    """No request running in the pool, sent to it, or prefetched for it."""
    return not state.active_requests and not state.reserved_requests


class IdlePoolStop(bootsteps.StartStopStep):  # type: ignore[misc]
    """Ends an idle prefork pool at once on a warm or cold stop; inert with work at hand."""

    label = "Idle pool stop"
    # Steps stop in reverse start order: after Pool means stopped just before it.
    requires = ("celery.worker.components:Pool",)

    def include_if(self, w: Any) -> bool:
        return True

    def create(self, w: Any) -> IdlePoolStop:
        return self

    def start(self, w: Any) -> None:
        pass

    def stop(self, w: Any) -> None:
        if not isinstance(w.pool, TaskPool) or not nothing_at_hand():
            return
        killed = kill_idle_children(w.pool)
        w.pool.terminate()
        logger.debug("idle pool: %d process(es) held nothing; ended without a join", killed)

    def terminate(self, w: Any) -> None:
        # The Pool step terminates the pool itself, right after this.
        if isinstance(w.pool, TaskPool) and nothing_at_hand():
            killed = kill_idle_children(w.pool)
            logger.debug("idle pool: killed %d process(es) that held nothing", killed)
