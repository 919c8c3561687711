"""Which of a stopping prefork pool's children have finished their shutdown hooks.

A billiard child, on its way out, runs Celery's ``worker_process_shutdown`` receivers, then
writes a DEATH notice ``(DEATH, (pid, exitcode))`` to its result pipe and sleeps a second so
that its parent can read it before ``os._exit``. The notice is the one sign, seen from the
parent, that the hooks are over. Where it lands depends on the pool:

* Celery's asynchronous pool (brokers with an event loop: Pub/Sub, Redis, AMQP) gives each
  child a pipe of its own, read by the event loop only; once the worker's loop has stopped,
  a readable pipe is that child's notice. It is left unread.
* The threaded pool (brokers without an event loop) shares one pipe, read by its result
  thread; when Celery closes the pool that thread ends as soon as no task is pending, and the
  notices that follow are read here. While it still runs, the notices are its to read, and
  only a child's exit says it is done.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Sequence
from typing import Any

from billiard.pool import DEATH
from celery.concurrency.asynpool import AsynPool

logger = logging.getLogger(__name__)


class DeathNotices:
    """The DEATH notices of a stopping pool's children, as far as they can be seen."""

    def __init__(self, pool: Any, processes: Sequence[Any]) -> None:
        inner = getattr(pool, "_pool", None)
        self._own_pipes: dict[int, int] = {}  # read end -> pid
        self._shared: Any = None
        self._poller = select.poll()
        if isinstance(inner, AsynPool):
            self._own_pipes = {p.outqR_fd: p.pid for p in processes
                               if getattr(p, "outqR_fd", None) is not None}
            for fd in self._own_pipes:
                self._poller.register(fd, select.POLLIN)
        else:
            reader = getattr(inner, "_result_handler", None)
            if reader is not None and not reader.is_alive():
                self._shared = getattr(inner, "_outqueue", None)

    def arrived(self) -> set[int]:
        """The pids whose notice arrived since the last call; does not block."""
        pids = set()
        for fd, _ in self._poller.poll(0):
            pids.add(self._own_pipes.pop(fd))
            self._poller.unregister(fd)  # left unread, it would stay readable
        while self._shared is not None and self._shared._reader.poll(0):
            try:
                kind, args = self._shared.get()
            except (OSError, EOFError, ValueError, TypeError) as exc:
                logger.debug("pool result pipe unreadable: %r", exc)
                self._shared = None
                break
            if kind == DEATH:
                pids.add(args[0])
        return pids
