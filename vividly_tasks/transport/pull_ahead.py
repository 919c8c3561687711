"""Pull-ahead: a refill Pull's round trip hidden behind the work of the busy slots.

With prefetch = concurrency a freed slot starts a Pull and its next task waits for the answer:
one round trip per task, nothing on loopback, 20-50 ms in a Google Cloud region. So while a
backlog exists, a channel leases a few messages more than its prefetch count and *holds* them
here: they are not handed to the consumer until one of its delivered messages is settled, and
then at once, while a Pull refills what was taken. The consumer never sees more than its
prefetch count, so Celery's pool never queues work behind a running task.

What keeps this honest (the reasons prefetch = concurrency exists):

* Sized from running averages, per channel: a held message must be expected to start within
  half of ``hold_seconds`` (``affordable``: slots freeing every task-time / slots), and no more
  are held than a Pull's latency needs (``needed``), nor than ``per_slot`` times the slots. A
  worker of long tasks (a task-time of seconds) holds none.
* Only while a backlog exists: a Pull that comes back with fewer messages than it asked for
  stops it until one comes back full, so an idle worker keeps one Pull waiting, as before,
  and a message reaching an idle worker does not make it pull a burst for itself.
* Bounded in time: a message held ``hold_seconds`` without a slot freeing is released (nacked,
  or renewed when one delivery short of the dead-letter limit), so another worker runs it
  within about a second, and pulling ahead pauses for ``PAUSE_AFTER_EXPIRY_SECONDS``.
* Held messages are leased like any other (leases.py) and released on close and cancel.

Why this design, measured by bench/cloud_distance.py (a latency proxy between every client and
the emulator; a prefork worker, concurrency 2, prefetch 2; a shared 2-core machine, medians of
2-3 rounds): without it a 20 ms round trip cut the no-op drain to 74 tasks/s (0.15x of its
loopback rate) and 50 ms tasks to 25.6/s (0.72x). Google's StreamingPull with the same flow
control did no better (0.38x, 0.72x): the server sends the next message an ack's round trip
after the slot freed. A Pull kept open while the slots are busy is, under a backlog, the same
as holding its messages ahead (Pub/Sub answers it at once), so the choice is how many to hold
and for how long. A fixed count is too few for short tasks and too many for long ones
(``--prefetch-multiplier 2`` / ``4``, i.e. 2 / 6 ahead: 137 / 288 no-op tasks/s), hence the
sizing from averages. At 20 ms, 4 per slot: 315 no-op tasks/s, 37.1/s for 50 ms tasks; 8 per
slot (the default), in runs alternated with ``--pull-ahead 0``: no-op 473 vs 71 tasks/s
(0.84x vs 0.18x of loopback), 50 ms tasks 36.3 vs 24.9/s, and at 50 ms 256 vs 35 and 35.2 vs
18.3/s. On loopback the averages ask for one or two ahead: bench/scale.py and
bench/transport.py show no regression (docs/benchmarks-cloud-distance.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Weight of a new sample in the running averages (task time, Pull latency).
SMOOTHING = 0.2
#: A full Pull back within this factor of the fastest (plus the margin) found a backlog;
#: a slower one waited on the server for a publish.
FAST_PULL_FACTOR = 2.0
FAST_PULL_MARGIN_SECONDS = 0.005
#: After a held message expired, no pulling ahead for this long: the averages misled.
PAUSE_AFTER_EXPIRY_SECONDS = 10.0


@dataclass
class Held:
    """A message leased ahead of the consumer's prefetch, waiting for a slot."""

    tag: str
    queue: str
    delivery: Any  # what the channel hands to the consumer when a slot frees
    held_at: float  # time.monotonic()


class PullAhead:
    """One channel's messages held ahead, and the averages that size them."""

    def __init__(self, *, per_slot: int, hold_seconds: float,
                 release: Callable[[list[str]], None]) -> None:
        self.per_slot = per_slot
        self.hold_seconds = hold_seconds
        #: Called (outside the lock, on a timer thread) with the tags of expired holds.
        self.release = release
        self._lock = threading.Lock()
        self._held: deque[Held] = deque()
        self._delivered: dict[str, float] = {}  # tag -> time.monotonic() it was handed over
        self.task_seconds: float | None = None  # handed over -> settled
        self.pull_seconds: float | None = None  # a Pull that brought messages, issued -> done
        self._backlog = False
        self._fastest: float | None = None  # the fastest full Pull: about one round trip
        self._paused_until = 0.0
        self._timer: threading.Timer | None = None

    # --- sizing ----------------------------------------------------------------------------
    def note_pull(self, asked: int, got: int, seconds: float) -> None:
        """A task-queue Pull for ``asked`` messages brought ``got`` after ``seconds``.

        Only a full Pull that came back about as fast as the fastest says a backlog exists:
        one that waited on the server for a publish (an idle worker's) does not, and only the
        time of the first kind is a round trip."""
        with self._lock:
            full = 0 < asked <= got
            if got:  # any Pull that brought messages bounds the round trip from above
                self._fastest = seconds if self._fastest is None else min(self._fastest,
                                                                          seconds)
            self._backlog = full and seconds <= (
                FAST_PULL_FACTOR * (self._fastest or 0.0) + FAST_PULL_MARGIN_SECONDS)
            if self._backlog:
                self.pull_seconds = smoothed(self.pull_seconds, seconds)

    def allowance(self, slots: int) -> int:
        """How many messages the channel may lease beyond its ``slots`` now."""
        with self._lock:
            return self._allowance(slots, time.monotonic())

    def _allowance(self, slots: int, now: float) -> int:
        if (self.per_slot <= 0 or slots <= 0 or not self._backlog or now < self._paused_until
                or self.task_seconds is None or self.pull_seconds is None):
            return 0
        interval = max(self.task_seconds / slots, 1e-4)  # a slot frees this often
        affordable = math.floor(self.hold_seconds / 2 / interval)
        needed = math.ceil(self.pull_seconds / interval) + 1
        return max(0, min(self.per_slot * slots, needed, affordable))

    # --- hand-over ---------------------------------------------------------------------------
    def admit(self, tag: str, queue: str, delivery: Any, slots: int) -> list[Any]:
        """A message was leased: the deliveries to hand to the consumer now (this one, unless
        it is held; ``slots`` 0: no limit)."""
        now = time.monotonic()
        with self._lock:
            self._held.append(Held(tag, queue, delivery, now))
            due = self._due(slots, now)
            self._arm(now)
            return due

    def settled(self, tag: str, slots: int) -> list[Any]:
        """A message was settled: the held deliveries that now have a slot, in order."""
        now = time.monotonic()
        with self._lock:
            handed = self._delivered.pop(tag, None)
            if handed is not None:
                self.task_seconds = smoothed(self.task_seconds, now - handed)
            elif any(held.tag == tag for held in self._held):  # settled unseen (recover)
                self._held = deque(held for held in self._held if held.tag != tag)
            return self._due(slots, now)

    def due(self, slots: int) -> list[Any]:
        """The held deliveries that have a slot (the prefetch count may have grown)."""
        with self._lock:
            return self._due(slots, time.monotonic())

    def _due(self, slots: int, now: float) -> list[Any]:
        due = []
        while self._held and (slots <= 0 or len(self._delivered) < slots):
            held = self._held.popleft()
            self._delivered[held.tag] = now
            due.append(held.delivery)
        return due

    def take(self, queue: str | None = None) -> list[str]:
        """Stop holding (every message, or a queue's): their tags, for the caller to release."""
        with self._lock:
            taken = [held.tag for held in self._held if queue is None or held.queue == queue]
            self._held = deque(held for held in self._held
                               if queue is not None and held.queue != queue)
            if queue is None:
                self._delivered.clear()
            return taken

    def __len__(self) -> int:
        return len(self._held)

    # --- expiry ------------------------------------------------------------------------------
    def _arm(self, now: float) -> None:
        if self._timer is None and self._held:
            wait = max(0.0, self._held[0].held_at + self.hold_seconds - now)
            self._timer = threading.Timer(wait + 0.001, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._timer = None
            expired = [held.tag for held in self._held
                       if now - held.held_at >= self.hold_seconds]
            if expired:
                gone = set(expired)
                self._held = deque(held for held in self._held if held.tag not in gone)
                self._paused_until = now + PAUSE_AFTER_EXPIRY_SECONDS
            self._arm(now)
        if expired:
            self.release(expired)


def smoothed(average: float | None, sample: float) -> float:
    return sample if average is None else average + SMOOTHING * (sample - average)
