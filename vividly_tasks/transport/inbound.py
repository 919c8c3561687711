"""Inbound decisions: what a received message is and who settles it.

For each message a Pull returns, on its own (one bad message never holds up the others): a
renewed copy addressed to another queue is acked; a copy a fanout or topic binding does not
match is acked (as AMQP drops it) before or after decoding, counted and logged; one that is
not a Kombu envelope, or is beyond the receive limits (limits.py), goes to the queue's
dead-letter topic with the reason (on a queue without one, remote control and replies, it
is dropped with a log line); the rest are leased and become Kombu payloads, Pub/Sub's
metadata in ``delivery_info``. Should taking a message fail for any other reason, it is
released for redelivery. A message released unstarted too often is renewed (``renew``).

Unmatched copies: AMQP routes a message to the queues whose bindings match and drops one
that matches none, silently unless it was published ``mandatory``. Here every queue of an
exchange gets a copy and drops the ones that are not its own, so each drop is counted
(``receipts.py``, the worker's summary) and logged at most once a minute per queue with the
number since: at WARNING on the default exchange (the topic is the queue's own, so nothing
anywhere matched it), at INFO on a named exchange (another queue's binding may have).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vividly_tasks.transport import plain_messages, receipts, tracing, wire
from vividly_tasks.transport.bindings import BindingRecords
from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.leases import Lease
from vividly_tasks.transport.limits import DEFAULT_LIMITS, ReceiveLimits
from vividly_tasks.transport.poison import PoisonMessage
from vividly_tasks.transport.routing import QueueRoute, published_at
from vividly_tasks.transport.stubs import PubsubMessage

logger = logging.getLogger(__name__)

#: Longest silence of the unmatched-copy log of a queue that keeps dropping copies.
UNMATCHED_LOG_EVERY_SECONDS = 60.0
#: A reason quotes this much of an unexpected error's text.
MAX_ERROR_TEXT_CHARS = 300


@dataclass
class Inbound:
    """One channel's receiving rules; ``on_leased`` hands a new lease to the channel's QoS
    (qos.py), which keeps it until the message is settled."""

    pubsub: PubSubClients
    binding_records: BindingRecords
    plain_message_tasks: dict[str, str]
    accepted_content_types: frozenset[str] | None
    ack_deadline_seconds: int
    max_lease_seconds: float
    max_delivery_attempts: int
    on_leased: Callable[[str, Lease], None]
    limits: ReceiveLimits = DEFAULT_LIMITS
    #: Per queue: when its unmatched copies were last logged, and how many since.
    _unmatched_log: dict[str, tuple[float, int]] = field(default_factory=dict, repr=False)

    def accept(
        self, route: QueueRoute, received: Any, *, no_ack: bool
    ) -> dict[str, Any] | None:
        """The Kombu payload of a received message, leased; None if it was settled here.
        Never raises: a message that cannot be taken is released for redelivery."""
        try:
            return self._accept(route, received, no_ack=no_ack)
        except Exception:
            logger.exception(
                "could not take message %s of queue %s: released for redelivery",
                received.message.message_id, route.queue,
            )
            self.pubsub.background.set_deadline(route.spec.path, received.ack_id, 0)
            return None

    def _accept(
        self, route: QueueRoute, received: Any, *, no_ack: bool
    ) -> dict[str, Any] | None:
        background = self.pubsub.background
        subscription = route.spec.path
        message = received.message
        attributes = message.attributes
        addressed_to = attributes.get(wire.QUEUE_ATTRIBUTE)
        if addressed_to is not None and addressed_to != route.queue:
            background.ack(subscription, received.ack_id)  # a renewed copy for another queue
            return None
        if route.fanout and wire.ENVELOPE_ATTRIBUTE in attributes and not route.accepts_now(
            attributes.get("exchange", ""), attributes.get("routing_key", ""),
            published_at(message), self.binding_records,
        ):
            # Not for this binding: skipped before decoding.
            self.drop_unmatched(route, received, attributes.get("exchange", ""),
                                attributes.get("routing_key", ""))
            return None
        payload = self.decode(route, received)
        if payload is None:
            return None
        info = payload["properties"]["delivery_info"]
        if addressed_to is None and not route.accepts_now(
            info.get("exchange", ""), info.get("routing_key", ""), published_at(message),
            self.binding_records,
        ):
            self.drop_unmatched(route, received, info.get("exchange", ""),
                                info.get("routing_key", ""))
            return None
        tag = uuid.uuid4().hex
        attempt = int(received.delivery_attempt or 0) or 1
        payload["properties"]["delivery_tag"] = tag
        # Pub/Sub's metadata goes where Kombu's SQS and gcpubsub put theirs: the headers
        # arrive exactly as the producer sent them.
        info.update({
            "redelivered": attempt > 1,
            wire.DELIVERY_ATTEMPT: attempt,
            wire.MESSAGE_ID: message.message_id,
            wire.PUBLISH_TIME: plain_messages.rfc3339(message.publish_time),
            wire.SUBSCRIPTION: subscription,
        })
        headers = payload["headers"]
        if no_ack:
            background.ack(subscription, received.ack_id)
            return payload
        lease = Lease(
            subscription, received.ack_id, message.message_id, time.monotonic(),
            ack_deadline_seconds=self.ack_deadline_seconds,
            max_lease_seconds=self.max_lease_seconds,
            eta=eta_timestamp(headers.get("eta")), original=message, delivery_attempt=attempt,
        )
        spans = tracing.hooks
        if spans is not None:
            lease.span = spans.start_receive(subscription, route.spec.topic, received, payload,
                                             attempt)
        self.on_leased(tag, lease)
        return payload

    def decode(self, route: QueueRoute, received: Any) -> dict[str, Any] | None:
        """The message as a Kombu payload; None if it could not be, and was dead-lettered."""
        try:
            return plain_messages.decode(
                received.message, queue=route.queue,
                task=self.plain_message_tasks.get(route.queue),
                accepted_content_types=self.accepted_content_types, limits=self.limits,
            )
        except PoisonMessage as poison:
            reason = str(poison)
        except Exception as exc:  # decoding is the message's doing: the same bytes fail again
            reason = f"could not be decoded: {error_text(exc)}"
        # Refused outside the except: its traceback (and the frames' decoded copies of a
        # large message) is gone before the dead-letter copy is made.
        self.refuse(route, received, reason)
        return None

    def refuse(self, route: QueueRoute, received: Any, reason: str) -> None:
        """Settle a message that could not be read: ``dead_letter``, counted (receipts.py)."""
        counted = "dropped" if route.spec.dead_letter_topic is None else "dead_lettered"
        receipts.for_this_process().add(counted)
        spans = tracing.hooks
        if spans is not None:
            spans.refused(route.spec.path, route.spec.topic, received, reason)
        self.dead_letter(route, received, reason)

    def drop_unmatched(self, route: QueueRoute, received: Any, exchange: str,
                       routing_key: str) -> None:
        """Ack a copy none of the queue's bindings match; count it, and log it (see above)."""
        self.pubsub.background.ack(route.spec.path, received.ack_id)
        receipts.for_this_process().add("unmatched")
        logger.debug("dropped message %s of queue %s: no binding matches exchange %r, routing "
                     "key %r", received.message.message_id, route.queue, exchange, routing_key)
        now = time.monotonic()
        logged_at, since = self._unmatched_log.get(route.queue, (-UNMATCHED_LOG_EVERY_SECONDS, 0))
        if now - logged_at < UNMATCHED_LOG_EVERY_SECONDS:
            self._unmatched_log[route.queue] = (logged_at, since + 1)
            return
        self._unmatched_log[route.queue] = (now, 0)
        logger.log(
            logging.INFO if exchange else logging.WARNING,
            "queue %s dropped %d message(s) that none of its bindings match (the last: "
            "exchange %r, routing key %r)", route.queue, since + 1, exchange, routing_key,
        )

    def dead_letter(self, route: QueueRoute, received: Any, reason: str) -> None:
        """Send a copy with the reason to the queue's dead-letter topic, then ack."""
        dead_letter_topic = route.spec.dead_letter_topic
        message = received.message
        if dead_letter_topic is None:
            logger.warning("dropped message %s of queue %s, which has no dead-letter topic: %s",
                           message.message_id, route.queue, reason)
            self.pubsub.background.ack(route.spec.path, received.ack_id)
            return
        logger.warning(
            "dead-lettering message %s of queue %s: %s", message.message_id, route.queue, reason
        )
        attributes = wire.copy_attributes(message.attributes, {
            "dead_letter_reason": reason,
            "dead_letter_queue": route.queue,
            "dead_letter_subscription": route.spec.path,
            "original_message_id": message.message_id,
            "delivery_attempt": str(received.delivery_attempt or 1),
            "dead_lettered_at": datetime.now().astimezone().isoformat(),
        })
        copy = PubsubMessage(data=message.data, attributes=attributes)
        self.pubsub.background.move(dead_letter_topic, copy, route.spec.path, received.ack_id)

    def renew(self, route: QueueRoute, lease: Lease) -> bool:
        """Replace a released, never-started message by a copy for its queue alone, whose
        delivery count starts again at 1; the original is acked once the copy is published
        (or released, if it cannot be). False if there is no copy to make."""
        original = lease.original
        if original is None:
            return False
        attributes = dict(original.attributes)
        releases = int(attributes.get(wire.RELEASES_ATTRIBUTE, "0") or 0) + 1
        copy = PubsubMessage(data=original.data, attributes=wire.copy_attributes(attributes, {
            wire.QUEUE_ATTRIBUTE: route.queue,
            wire.RELEASES_ATTRIBUTE: str(releases),
            wire.RENEWS_ATTRIBUTE: attributes.get(wire.RENEWS_ATTRIBUTE, original.message_id),
        }))
        logger.info(
            "renewing message %s of queue %s: released unstarted at delivery %d of %d "
            "(%d release(s) so far)", original.message_id, route.queue,
            lease.delivery_attempt, self.max_delivery_attempts, releases,
        )
        self.pubsub.background.move(route.spec.topic, copy, lease.subscription, lease.ack_id)
        return True


def error_text(exc: BaseException) -> str:
    """An unexpected error as a reason: its type and the start of its text."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_TEXT_CHARS else text[: MAX_ERROR_TEXT_CHARS - 3] + "..."


def eta_timestamp(eta: Any) -> float | None:
    """Celery's ``eta`` header (ISO 8601) as a Unix time, or None."""
    if not isinstance(eta, str):
        return None
    try:  # a hostile ETA (year 1 in local time ...) must not break the receive path
        parsed = datetime.fromisoformat(eta)
        if parsed.tzinfo is None:
            parsed = parsed.astimezone()
        return parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
