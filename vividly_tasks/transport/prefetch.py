"""The prefetch room of a channel's QoS (qos.py): how many more messages it may lease.

The limit is the consumer's prefetch count (or the ``max_outstanding_messages`` option); a
channel's leased messages and the room its Pulls in flight reserved count against it. Task
queues of one channel share the room: a consumer whose Pulls in flight already hold some gets
at most its share, so a quiet queue's Pull, waiting on the server, cannot keep another
queue's messages from being pulled. The leases themselves live in leases.py.
"""

from __future__ import annotations

import threading


class PrefetchRoom:
    """The delivery tags a channel holds and the room reserved by its Pulls in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: set[str] = set()
        self._reserved = 0

    def reserve(self, limit: int, consumers: int, holding: int = 0) -> int:
        """Claim room for up to N messages in the next Pull (0: no room, do not pull)."""
        with self._lock:
            share = -(-limit // max(1, consumers)) - holding
            room = max(0, min(share, limit - len(self._tags) - self._reserved))
            self._reserved += room
            return room

    def unreserve(self, count: int) -> None:
        if count:
            with self._lock:
                self._reserved -= count

    def add(self, delivery_tag: str) -> None:
        with self._lock:
            self._tags.add(delivery_tag)

    def discard(self, delivery_tag: str) -> None:
        with self._lock:
            self._tags.discard(delivery_tag)

    def take_all(self) -> set[str]:
        """Every tag held, now no longer counted (they are being released)."""
        with self._lock:
            tags, self._tags = self._tags, set()
        return tags

    def __len__(self) -> int:
        return len(self._tags)
