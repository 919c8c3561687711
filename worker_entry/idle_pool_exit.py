"""A worker bootstep: when a job stops with nothing at hand, its idle pool exits at once.

Billiard's own terminate spends ~1.5 s on an idle pool: half a second waiting for the
children's pipes to go quiet, then a SIGTERM and a join per child, each child tearing down its
interpreter. Children that hold no task hold nothing a kill could lose (with ``acks_late`` a
message is acked only after its task ran, and none is running), so this step SIGKILLs them
just before the Pool step terminates, and billiard finds them gone.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from vividly_tasks.idle_pool_stop import kill_idle_children
from worker_entry.run import WorkerRun

logger = logging.getLogger(__name__)


class IdlePoolExit(bootsteps.StartStopStep):  # type: ignore[misc]
    """Kills the prefork children on a cold stop with nothing at hand; inert otherwise."""

    label = "Idle pool exit"
    # Steps stop in reverse start order: after Pool means stopped just before it.
    requires = ("celery.worker.components:Pool",)

    def __init__(self, w: Any, vividly_run: WorkerRun | None = None, **kwargs: Any) -> None:
        self.run = vividly_run

    def include_if(self, w: Any) -> bool:
        return self.run is not None and self.run.mode == "job"

    def create(self, w: Any) -> IdlePoolExit:
        return self

    def start(self, w: Any) -> None:
        pass

    def stop(self, w: Any) -> None:
        pass  # a warm stop lets the pool finish what it runs

    def terminate(self, w: Any) -> None:
        if self.run is None or not self.run.stopped_with_nothing_at_hand:
            return
        killed = kill_idle_children(w.pool)
        logger.debug("idle pool: killed %d process(es) that held nothing", killed)
