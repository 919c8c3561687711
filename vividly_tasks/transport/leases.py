"""Leases: every received, unsettled message keeps its ack deadline extended.

A message is leased from the moment a pull returns it until it is acked, released or
dead-lettered: while it is prefetched, while Celery holds it for its ETA, and while it runs.
A keeper thread (one per process) extends each lease every third of its ack deadline, up to
its ``max_lease_seconds`` after receipt, so a two-hour video render is never redelivered to a
second worker while it runs. It sleeps until the next extension is due (at most
``TICK_SECONDS``), and without leases until one is added: an idle worker has no timer here.
Each channel's QoS (qos.py) adds its messages here when they are leased and takes them out when
it settles or releases them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vividly_tasks.transport import tracing
from vividly_tasks.transport.background import BackgroundCalls

logger = logging.getLogger(__name__)

#: Longest deadline Pub/Sub accepts in modifyAckDeadline.
MAX_ACK_DEADLINE_SECONDS = 600


@dataclass
class Lease:
    """One received message that is not settled yet."""

    subscription: str
    ack_id: str
    message_id: str
    received_at: float  # time.monotonic()
    ack_deadline_seconds: int
    max_lease_seconds: float
    eta: float | None = None  # time.time() of a Celery ETA/countdown, if any
    original: Any = None  # the received PubsubMessage, kept for an exact dead-letter copy
    extended_at: float = 0.0  # time.monotonic() of the last extension (0: at receipt)
    delivery_attempt: int = 1  # Pub/Sub's count for this delivery
    #: The consumer began working on it (the worker behaviours say so: a task handed to the
    #: pool). A release of a message that never started is not a failed attempt.
    started: bool = False
    #: Its receive span while tracing is on (tracing.py), ended when it is settled.
    span: Any = None

    def next_extension(self) -> float:
        """time.monotonic() at which this lease's next extension is due."""
        last = self.extended_at or self.received_at
        return last + max(1.0, self.ack_deadline_seconds / 3)

    def extension_due(self, now: float) -> bool:
        return now >= self.next_extension()

    def release_deadline(self, now: float) -> int:
        """Seconds until Pub/Sub should redeliver this message when we let it go.

        Zero for ordinary messages (another worker gets it at once); for a delayed task, the
        time until it is due, within Pub/Sub's 600 s limit, so it comes back near its ETA
        instead of spinning between workers.
        """
        if self.eta is None:
            return 0
        return max(0, min(MAX_ACK_DEADLINE_SECONDS, int(self.eta - now)))


class LeaseBook:
    """The unsettled leases of one process, and the thread that keeps them alive."""

    #: Longest sleep of the keeper while it holds leases; each is extended when its own step
    #: is due, and an expired ``max_lease_seconds`` is noticed within this.
    TICK_SECONDS = 1.0

    def __init__(self, calls: BackgroundCalls, *, clock: Callable[[], float] = time.monotonic,
                 keep_alive: bool = True) -> None:
        """``clock``: the time leases are measured in (``Lease.received_at``); without
        ``keep_alive`` no keeper thread starts, and the owner calls ``extend_due`` itself."""
        self.calls = calls
        self.clock = clock
        self.keep_alive = keep_alive
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._added = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    def add(self, tag: str, lease: Lease) -> None:
        with self._lock:
            self._leases[tag] = lease
            self._added.notify()
            if self._thread is None and self.keep_alive:
                self._thread = threading.Thread(
                    target=self._keep_alive, name="pubsub-leases", daemon=True
                )
                self._thread.start()

    def get(self, tag: str) -> Lease | None:
        with self._lock:
            return self._leases.get(tag)

    def pop(self, tag: str) -> Lease | None:
        with self._lock:
            return self._leases.pop(tag, None)

    def pop_all(self, tags: set[str]) -> list[Lease]:
        with self._lock:
            return [self._leases.pop(tag) for tag in tags if tag in self._leases]

    def _keep_alive(self) -> None:
        while True:
            with self._lock:
                while not self._leases:
                    self._added.wait()
                due = min(lease.next_extension() for lease in self._leases.values())
            time.sleep(min(self.TICK_SECONDS, max(0.0, due - self.clock())))
            self.extend_due()

    def extend_due(self) -> None:
        """Extend the leases whose step is due; stop extending those held too long."""
        now = self.clock()
        with self._lock:
            current = list(self._leases.items())
        for tag, lease in current:
            if now - lease.received_at > lease.max_lease_seconds:
                with self._lock:
                    self._leases.pop(tag, None)
                logger.warning(
                    "message %s held for over %.0f s (max_lease_seconds): no longer extending "
                    "its lease, so Pub/Sub will redeliver it",
                    lease.message_id, lease.max_lease_seconds,
                )
                if lease.span is not None and (spans := tracing.hooks) is not None:
                    spans.settled(lease.span, "lease expired")
            elif lease.extension_due(now):
                lease.extended_at = now
                self.calls.set_deadline(
                    lease.subscription, lease.ack_id, lease.ack_deadline_seconds
                )
                if lease.span is not None and (spans := tracing.hooks) is not None:
                    spans.extended(lease.span, lease.ack_deadline_seconds)
