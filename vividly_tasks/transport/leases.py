"""Leases: every received, unsettled message keeps its ack deadline extended.

A message is leased from the moment a pull returns it until it is acked, released or
dead-lettered: while it is prefetched, while Celery holds it for its ETA, and while it runs.
A keeper thread extends all leases every third of the ack deadline, up to
``max_lease_seconds`` after receipt, so a two-hour video render is never redelivered to a
second worker while it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from google.pubsub_v1 import PubsubMessage

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
    eta: float | None = None  # time.time() of a Celery ETA/countdown, if any
    original: PubsubMessage | None = None  # kept for an exact dead-letter copy

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
    """The unsettled leases of one connection, and the thread that keeps them alive."""

    def __init__(
        self,
        calls: BackgroundCalls,
        *,
        ack_deadline_seconds: int,
        max_lease_seconds: float,
    ) -> None:
        self.calls = calls
        self.ack_deadline_seconds = ack_deadline_seconds
        self.max_lease_seconds = max_lease_seconds
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, tag: str, lease: Lease) -> None:
        with self._lock:
            self._leases[tag] = lease
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._keep_alive, name="pubsub-leases", daemon=True
                )
                self._thread.start()

    def pop(self, tag: str) -> Lease | None:
        with self._lock:
            return self._leases.pop(tag, None)

    def pop_all(self, tags: set[str] | None = None) -> list[Lease]:
        with self._lock:
            chosen = list(self._leases) if tags is None else [t for t in tags if t in self._leases]
            return [self._leases.pop(tag) for tag in chosen]

    def __len__(self) -> int:
        return len(self._leases)

    def stop(self) -> None:
        self._stop.set()

    @property
    def extension_interval_seconds(self) -> float:
        return max(1.0, self.ack_deadline_seconds / 3)

    def _keep_alive(self) -> None:
        while not self._stop.wait(self.extension_interval_seconds):
            self.extend_all()

    def extend_all(self) -> None:
        now = time.monotonic()
        expired: list[tuple[str, Lease]] = []
        with self._lock:
            current = list(self._leases.items())
        for tag, lease in current:
            if now - lease.received_at > self.max_lease_seconds:
                expired.append((tag, lease))
                continue
            self.calls.set_deadline(lease.subscription, lease.ack_id, self.ack_deadline_seconds)
        for tag, lease in expired:
            with self._lock:
                self._leases.pop(tag, None)
            logger.warning(
                "message %s held for over %.0f s (max_lease_seconds): no longer extending its "
                "lease, so Pub/Sub will redeliver it",
                lease.message_id, self.max_lease_seconds,
            )
