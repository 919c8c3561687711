"""What the receive path settled on its own, counted per process for the worker's summary.

A message the transport could not read never reaches Celery, and a copy that none of its
queue's bindings match is acked unseen; both would vanish from every count a worker keeps.
A delayed task given back unstarted (a job that exits before its ETA) is counted with the
earliest ETA among them: the work this worker leaves for the next one, and when it is due.
Importing this module loads nothing of gRPC or the Pub/Sub client.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, fields


@dataclass
class ReceiptCounts:
    #: Messages that were not Kombu messages or were beyond the receive limits, sent to their
    #: queue's dead-letter topic with the reason.
    dead_lettered: int = 0
    #: The same on a queue without a dead-letter topic (remote control, replies): acked and
    #: logged with the reason.
    dropped: int = 0
    #: Copies that none of their queue's bindings match, acked (AMQP drops them unrouted).
    unmatched: int = 0
    #: Delayed tasks (a Celery ETA still ahead) given back unstarted, to come back near it.
    released_delayed: int = 0
    #: Their ETAs (``time.time()``), in the order they were given back (one float each: a
    #: worker gives back only what it held at a stop).
    _released_due_at: list[float] = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def add_released_delayed(self, due_at: float) -> None:
        """A delayed task due at ``due_at`` was given back unstarted."""
        with self._lock:
            self.released_delayed += 1
            self._released_due_at.append(due_at)

    def first_released_due_at(self, since: int = 0) -> float | None:
        """The earliest ETA of the delayed tasks given back after the first ``since`` (a
        ``released_delayed`` count read earlier), None if none was."""
        with self._lock:
            return min(self._released_due_at[since:], default=None)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self)
                    if not f.name.startswith("_")}


_lock = threading.Lock()
_counts: dict[int, ReceiptCounts] = {}


def for_this_process() -> ReceiptCounts:
    """This process's counts (a forked child starts its own at zero)."""
    pid = os.getpid()
    with _lock:
        counts = _counts.get(pid)
        if counts is None:
            _counts.clear()  # inherited across fork: not this process's
            counts = _counts[pid] = ReceiptCounts()
        return counts
