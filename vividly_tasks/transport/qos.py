"""The channel's QoS: the one ledger of its deliveries, from lease to settle.

Kombu's virtual transport asks a channel's ``QoS`` whether it may consume and tells it of every
ack and reject; here it also keeps what Pub/Sub needs (the shape of Kombu's Redis transport,
whose ``QoS`` owns its unacked messages). A message enters with ``leased`` once inbound.py
has taken it, and leaves through one settle, which updates every part together:

* the prefetch room (prefetch.py): how many more messages the channel's Pulls may lease;
* the lease (leases.py): its entry in the process's lease book, whose keeper extends it;
* pull-ahead (pull_ahead.py): a message held beyond the prefetch count is handed over when a
  settle frees a slot, and released when none frees in time;
* Kombu's own bookkeeping of delivered messages (``virtual.QoS``).

Settles: ``ack``; ``reject`` with requeue (a nack: Pub/Sub redelivers this very message) or
without (the dead-letter topic, with the reason); releases give unsettled messages back, a
delayed task near its ETA: on recover (``restore_unacked``), when a consumer stops
(``release_queue``), when a held message finds no slot in time, and when the channel closes
(``restore_unacked_once``). Each ends the message's receive span (tracing.py) with its outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from functools import cached_property
from typing import Any, Protocol, TypeVar

from kombu.transport import virtual

from vividly_tasks.transport import receipts, tracing
from vividly_tasks.transport.background import BackgroundCalls
from vividly_tasks.transport.leases import Lease, LeaseBook
from vividly_tasks.transport.prefetch import PrefetchRoom
from vividly_tasks.transport.pull_ahead import PullAhead

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: A delivery as the consumer gets it: (queue, Kombu payload, the ``after`` attribute).
Delivery = tuple[str, dict[str, Any], str | None]


class QoSClients(Protocol):
    """The process's Pub/Sub calls the QoS makes (clients.py)."""

    @property
    def background(self) -> BackgroundCalls: ...
    @property
    def leases(self) -> LeaseBook: ...


class QoSConnection(Protocol):
    """What the QoS reads of the channel's connection (transport.py)."""

    #: The connection broke: running tasks keep their leases when the channel closes.
    lost: bool

    def option(self, name: str, kind: type[T]) -> T:
        """A transport option converted to ``kind``, or the channel's default."""


class QoSHost(Protocol):
    """What the QoS uses of its channel (channel.py), named so neither imports the other."""

    @property
    def pubsub(self) -> QoSClients: ...
    @property
    def connection(self) -> QoSConnection: ...
    @property
    def max_delivery_attempts(self) -> int: ...

    def deliver(self, delivery: Delivery) -> None:
        """Hand a message to the consuming thread."""

    def refill_soon(self) -> None:
        """A slot is free again: start the next Pull."""

    def dead_letter(self, lease: Lease, reason: str) -> None:
        """Send the message to its queue's dead-letter topic with the reason, then ack."""

    def renew(self, lease: Lease) -> bool:
        """Replace a released, never-started message by a fresh copy; False if it cannot be."""


class QoS(virtual.QoS):
    """One channel's deliveries: the room they take, their leases, and how each is settled."""

    channel: QoSHost

    def __init__(self, channel: QoSHost, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        # Releases happen in the channel's close, before its calls are flushed; never from a
        # garbage-collection finalizer on whatever thread runs it at interpreter exit.
        self._on_collect.cancel()
        self.room = PrefetchRoom()
        self._reasons: dict[str, str] = {}  # delivery tag -> why it is about to be rejected
        self._closed = False

    @cached_property
    def pull_ahead(self) -> PullAhead:
        option = self.channel.connection.option
        return PullAhead(per_slot=option("pull_ahead", int),
                         hold_seconds=option("pull_ahead_hold_seconds", float),
                         release=self._release_held)

    # --- room ------------------------------------------------------------------------------
    def reserve(self, consumers: int, holding: int = 0, *, default_limit: int) -> int:
        """Room for up to N messages in the next Pull (0: do not pull): the prefetch count
        plus what pull-ahead allows now, or ``default_limit`` without a prefetch count."""
        slots = self.prefetch_count
        limit = slots + self.pull_ahead.allowance(slots) if slots else default_limit
        return self.room.reserve(limit, consumers, holding)

    def unreserve(self, count: int) -> None:
        self.room.unreserve(count)

    def note_pull(self, asked: int, got: int, seconds: float) -> None:
        self.pull_ahead.note_pull(asked, got, seconds)

    # --- entering ----------------------------------------------------------------------------
    def leased(self, delivery_tag: str, lease: Lease) -> None:
        """A received message was taken (inbound.py): it counts and is kept alive from now."""
        self.room.add(delivery_tag)
        self.channel.pubsub.leases.add(delivery_tag, lease)

    def admit(self, delivery_tag: str, delivery: Delivery) -> None:
        """A leased task-queue message: to the consumer now, or held until a slot frees."""
        self._deliver(self.pull_ahead.admit(delivery_tag, delivery[0], delivery,
                                            self.prefetch_count))

    def prefetch_changed(self) -> None:
        """The prefetch count grew (Celery's ETA tasks): held messages may have a slot."""
        self._deliver(self.pull_ahead.due(self.prefetch_count))

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self.channel.deliver(delivery)

    def note_started(self, delivery_tag: str) -> None:
        """The consumer began working on this message: releasing it from now on counts as a
        failed attempt (see ``release_all``)."""
        lease = self.channel.pubsub.leases.get(delivery_tag)
        if lease is not None:
            lease.started = True

    def set_dead_letter_reason(self, delivery_tag: str, reason: str) -> None:
        """Say why a message is about to be rejected; the dead-letter copy carries it."""
        self._reasons[delivery_tag] = reason

    # --- settling ------------------------------------------------------------------------------
    def _settle(self, delivery_tag: str) -> Lease | None:
        """Take a message out of every part of the ledger; its lease if it was still leased
        (None: settled before, or its lease expired)."""
        lease = self.channel.pubsub.leases.pop(delivery_tag)
        due = self.pull_ahead.settled(delivery_tag, self.prefetch_count)
        self.room.discard(delivery_tag)
        super().ack(delivery_tag)  # Kombu's bookkeeping of delivered messages
        self._deliver(due)  # a slot freed: a message held ahead starts without a Pull
        return lease

    def ack(self, delivery_tag: str) -> None:
        lease = self._settle(delivery_tag)
        if lease is not None:
            self.channel.pubsub.background.ack(lease.subscription, lease.ack_id)
            settled(lease, "ack")
        self.channel.refill_soon()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """requeue: Pub/Sub redelivers this very message (a nack), never a second copy.

        Without requeue: the message goes to the queue's dead-letter topic with the reason.
        """
        reason = self._reasons.pop(delivery_tag, None)
        lease = self._settle(delivery_tag)
        if lease is not None:
            if requeue:
                self.channel.pubsub.background.set_deadline(lease.subscription, lease.ack_id, 0)
                settled(lease, "nack", deadline_seconds=0)
            else:
                task = lease.original.attributes.get("task") if lease.original else None
                reason = reason or (
                    f"rejected without requeue by the consumer (task {task or 'unknown'}; "
                    "the worker log says why)"
                )
                self.channel.dead_letter(lease, reason)
                settled(lease, "dead letter", reason=reason)
        self.channel.refill_soon()

    # --- releasing -------------------------------------------------------------------------------
    def restore_unacked(self) -> list[Any]:
        """Kombu's recover: every unsettled message goes back to Pub/Sub at once, to be
        delivered again; none could fail to (the errors Kombu's base returns)."""
        self._flush()
        self._delivered.clear()
        self.release_all(at_once=True)
        return []

    def restore_unacked_once(self, stderr: Any = None) -> None:
        """The channel closes: give back what it holds, once.

        After a lost connection, Celery replaces the channel while tasks may still run: their
        messages keep their leases (extended per process) and are acked when done; only those
        held ahead, never handed over, are released.
        """
        if self._closed:
            return
        self._closed = True
        if self.channel.connection.lost:
            self._release(self.pull_ahead.take(), at_once=True)
            logger.info("connection lost: keeping %d lease(s) of this channel", len(self.room))
        else:
            self.release_all(renew=True)

    def release_all(self, *, at_once: bool = False, renew: bool = False) -> None:
        """Give every unsettled message back to Pub/Sub now; a delayed task comes back near
        its ETA unless ``at_once``.

        ``renew`` (a closing channel): a message that never started, one delivery short of
        the dead-letter policy's limit, is renewed instead: Pub/Sub counts a release as a
        delivery like any other, and releases alone must not dead-letter a message that a
        fleet of short jobs keeps receiving and giving back (a countdown due in an hour, jobs
        that exit every ten minutes).
        """
        self.pull_ahead.take()
        self._release(self.room.take_all(), at_once=at_once, renew=renew)

    def release_queue(self, queue: str) -> None:
        """The queue's consumer stopped: the messages held ahead for it go back."""
        self._release(self.pull_ahead.take(queue), renew=True)

    def _release_held(self, tags: list[str]) -> None:
        """Runs on a timer: messages held ahead that found no free slot go to other workers."""
        logger.info("%d message(s) held ahead found no free slot within %.1f s",
                    len(tags), self.pull_ahead.hold_seconds)
        self._release(tags, renew=True)

    def _release(self, tags: Iterable[str], *, at_once: bool = False,
                 renew: bool = False) -> None:
        tags = set(tags)
        for tag in tags:
            self.room.discard(tag)
        now = time.time()
        released = self.channel.pubsub.leases.pop_all(tags)
        limit = self.channel.max_delivery_attempts - 1
        for lease in released:
            if not lease.started and lease.eta is not None and lease.eta > now:
                # Work handed to whoever runs when it is due (the worker's summary says so).
                receipts.for_this_process().add_released_delayed(lease.eta)
            if renew and not lease.started and lease.delivery_attempt >= limit \
                    and self.channel.renew(lease):
                settled(lease, "renew")
                continue
            deadline = 0 if at_once else lease.release_deadline(now)
            self.channel.pubsub.background.set_deadline(lease.subscription, lease.ack_id, deadline)
            settled(lease, "nack", deadline_seconds=deadline)
        if released:
            logger.info("released %d unstarted message(s) back to Pub/Sub", len(released))


def settled(lease: Lease, outcome: str, **details: Any) -> None:
    """End a settled message's receive span (tracing.py), if it has one: how it was settled."""
    if lease.span is None:
        return
    spans = tracing.hooks
    if spans is not None:
        spans.settled(lease.span, outcome, **details)
    lease.span = None
