"""End a prefork pool's idle children through their own shutdown, without billiard's pause.

A billiard child leaves by ``os._exit``, so the atexit handlers of a child never run (by
design: the ones it inherited at the fork belong to the worker, and running them in each
child would flush or close the worker's copies). The hook a child does run on its way out is
Celery's ``worker_process_shutdown``: billiard calls it from the child's exit path, then
writes a DEATH notice and sleeps a second before ``os._exit``, so that the parent can read
the notice. That second, per stop, is what an idle pool's stop should not pay.

So each idle child gets SIGTERM, which billiard's handler in the child turns into
``SystemExit`` in its wait for a job, taking it down that exit path (unless billiard has
already sent it the sentinel that starts that exit: the threaded pool, once closed). A child
has run its shutdown once its DEATH notice arrived (``death_notices.py``) or once it is
gone; it is then SIGKILLed and reaped. A child still in its hooks at the deadline is
SIGKILLed too, and a warning names it and the receivers it inherited.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from billiard.pool import RUN
from celery.concurrency.asynpool import AsynPool
from celery.signals import worker_process_shutdown

from vividly_tasks.worker.death_notices import DeathNotices

logger = logging.getLogger(__name__)

#: How often the children are looked at while they run their hooks; an idle child's
#: shutdown takes a few milliseconds, so this is most of what the stop costs.
POLL_SECONDS = 0.005
#: A SIGKILLed process is gone within milliseconds; this only bounds a surprise.
REAP_TIMEOUT_SECONDS = 1.0


@dataclass
class ChildrenEnded:
    """What became of the children: pids that ran their shutdown, pids cut off in it."""

    finished: list[int] = field(default_factory=list)
    cut_off: list[int] = field(default_factory=list)


def pool_processes(pool: Any) -> list[Any]:
    """The billiard processes of a Celery prefork ``TaskPool`` (none before it started)."""
    return list(getattr(getattr(pool, "_pool", None), "_pool", None) or [])


def told_to_leave(pool: Any) -> bool:
    """Whether billiard has sent each child its sentinel already: the threaded pool's task
    thread does as soon as the pool is closed (Celery closes it first on every stop), and the
    child is then on its way out through its hooks, which a SIGTERM would cut short. The
    asynchronous pool sends them only when it is joined, after this step."""
    inner = getattr(pool, "_pool", None)
    return not isinstance(inner, AsynPool) and getattr(inner, "_state", RUN) != RUN


def end_children(pool: Any, deadline: float) -> ChildrenEnded:
    """Let each child of ``pool`` run its shutdown hooks until ``deadline`` (monotonic),
    then SIGKILL and reap it; returns which finished and which were cut off."""
    processes = pool_processes(pool)
    started = time.monotonic()
    ask = not told_to_leave(pool)
    pending = {}
    for process in processes:
        with contextlib.suppress(OSError, TypeError):  # already gone, or never started
            if ask:
                os.kill(process.pid, signal.SIGTERM)
            else:
                os.kill(process.pid, 0)
            pending[process.pid] = process
    notices = DeathNotices(pool, list(pending.values()))
    ended = ChildrenEnded()
    while pending:
        arrived = notices.arrived()
        for pid, process in list(pending.items()):
            if pid in arrived or not process.is_alive():
                ended.finished.append(pid)
                del pending[pid]
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0:
            break
        time.sleep(min(POLL_SECONDS, remaining))
    for pid, process in pending.items():
        ended.cut_off.append(pid)
        logger.warning(
            "pool process %s (pid %d) was still in its worker_process_shutdown hooks after "
            "%.1f s: killed (its receivers: %s)",
            getattr(process, "name", "?"), pid, time.monotonic() - started,
            ", ".join(shutdown_receivers()) or "none known",
        )
    kill_and_reap(processes)
    return ended


def kill_and_reap(processes: Sequence[Any]) -> None:
    """SIGKILL and reap: billiard then finds them gone and waits on none of their pipes."""
    for process in processes:
        with contextlib.suppress(OSError, TypeError):
            os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(REAP_TIMEOUT_SECONDS)


def shutdown_receivers() -> list[str]:
    """Names of the ``worker_process_shutdown`` receivers this process knows of (those a
    child connected after the fork are its own), to say which hook may have hung."""
    names = []
    for _key, entry in list(worker_process_shutdown.receivers):
        receiver = entry() if isinstance(entry, weakref.ReferenceType) else entry
        if receiver is not None:
            module = getattr(receiver, "__module__", "?")
            names.append(f"{module}.{getattr(receiver, '__qualname__', repr(receiver))}")
    return names
