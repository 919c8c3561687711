"""A queue's dead letters, for people: browse, replay to the queue, discard.

Two kinds of message land on a queue's dead-letter topic: copies that the transport
dead-lettered itself (a task's ``Reject``, a poison message; the reason and the delivery count
are in ``dead_letter_*`` attributes, see ``channel.dead_letter``) and messages that Pub/Sub's
own dead-letter policy moved after too many deliveries (``CloudPubSubDeadLetterSource*``
attributes). Pub/Sub has no peek, so browsing pulls and holds the messages; whatever is not
replayed or discarded is released at the end, unchanged, for the next look.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as google_errors
from google.pubsub_v1 import PubsubMessage, ReceivedMessage

from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.errors import translate
from vividly_tasks.transport.provisioning import ADMIN_TIMEOUT_SECONDS

#: Attributes that describe the dead-lettering, not the message: dropped on replay.
OUR_ATTRIBUTES = frozenset({
    "dead_letter_reason", "dead_letter_queue", "dead_letter_subscription",
    "original_message_id", "delivery_attempt", "dead_lettered_at",
})
PUBSUB_ATTRIBUTE_PREFIX = "CloudPubSubDeadLetterSource"
#: How long one browsing Pull waits for messages; an empty one ends the browse.
PULL_TIMEOUT_SECONDS = 2.0
PULL_BATCH = 500
#: Held messages get this ack deadline, so a long browse does not lose its hold.
HOLD_SECONDS = 120


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as it lies on the dead-letter subscription."""

    message_id: str
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime.datetime | None

    @classmethod
    def from_received(cls, received: ReceivedMessage) -> DeadLetter:
        message = received.message
        return cls(message.message_id, received.ack_id, bytes(message.data),
                   dict(message.attributes), message.publish_time)

    @property
    def reason(self) -> str:
        reason = self.attributes.get("dead_letter_reason")
        if reason:
            return reason
        count = self.attributes.get(f"{PUBSUB_ATTRIBUTE_PREFIX}DeliveryCount")
        if count:
            return f"not acknowledged after {count} deliveries (Pub/Sub's dead-letter policy)"
        return "unknown (no reason attribute)"

    @property
    def delivery_count(self) -> int | None:
        value = (self.attributes.get("delivery_attempt")
                 or self.attributes.get(f"{PUBSUB_ATTRIBUTE_PREFIX}DeliveryCount"))
        return int(value) if value and value.isdigit() else None

    @property
    def task(self) -> str | None:
        return self.attributes.get("task")

    @property
    def task_id(self) -> str | None:
        return self.attributes.get("task_id")

    def matches(self, identifier: str) -> bool:
        """Selected by its own message id, the original's, or the task (request) id."""
        return identifier in {self.message_id, self.task_id,
                              self.attributes.get("original_message_id")}

    def replay_message(self) -> PubsubMessage:
        """The message as it was before it was dead-lettered."""
        attributes = {
            key: value for key, value in self.attributes.items()
            if key not in OUR_ATTRIBUTES and not key.startswith(PUBSUB_ATTRIBUTE_PREFIX)
        }
        attributes["replay_of"] = self.message_id
        return PubsubMessage(data=self.data, attributes=attributes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "original_message_id": self.attributes.get("original_message_id"),
            "task": self.task,
            "task_id": self.task_id,
            "reason": self.reason,
            "delivery_count": self.delivery_count,
            "dead_lettered_at": (self.attributes.get("dead_lettered_at")
                                 or (self.publish_time.isoformat() if self.publish_time
                                     else None)),
            "queue": self.attributes.get("dead_letter_queue"),
            "size_bytes": len(self.data),
        }


class DeadLetterBox:
    """The dead letters of one queue: its dead-letter subscription, its topic to replay to."""

    def __init__(self, clients: PubSubClients, *, subscription: str, replay_topic: str) -> None:
        self.clients = clients
        self.subscription = subscription
        self.replay_topic = replay_topic
        self._settled: set[str] = set()

    @contextlib.contextmanager
    def browse(self, limit: int | None = None) -> Iterator[list[DeadLetter]]:
        """Hold up to ``limit`` dead letters (all, if None) while the caller looks; those not
        replayed or discarded meanwhile are released when it is done."""
        held: dict[str, DeadLetter] = {}
        try:
            while limit is None or len(held) < limit:
                batch = self._pull(PULL_BATCH if limit is None else min(PULL_BATCH,
                                                                          limit - len(held)))
                if not batch:
                    break
                for letter in batch:
                    held.setdefault(letter.message_id, letter)
            yield sorted(held.values(), key=lambda d: d.publish_time or datetime.datetime.min)
        finally:
            unsettled = [d.ack_id for d in held.values() if d.ack_id not in self._settled]
            if unsettled:
                self._modify_deadline(unsettled, 0)

    def replay(self, letters: list[DeadLetter]) -> None:
        """Publish each to the queue's topic, then ack its dead-letter copy (a crash between
        gives a duplicate, which the idempotent tasks absorb; never a loss)."""
        for letter in letters:
            try:
                self.clients.publisher.publish(
                    topic=self.replay_topic, messages=[letter.replay_message()],
                    timeout=ADMIN_TIMEOUT_SECONDS,
                )
            except Exception as exc:
                raise translate(exc, "publish to", self.replay_topic) from exc
            self._ack([letter])

    def discard(self, letters: list[DeadLetter]) -> None:
        self._ack(letters)

    def _ack(self, letters: list[DeadLetter]) -> None:
        ack_ids = [letter.ack_id for letter in letters]
        if not ack_ids:
            return
        try:
            self.clients.subscriber.acknowledge(
                subscription=self.subscription, ack_ids=ack_ids, timeout=ADMIN_TIMEOUT_SECONDS
            )
        except Exception as exc:
            raise translate(exc, "acknowledge on", self.subscription) from exc
        self._settled.update(ack_ids)

    def _pull(self, max_messages: int) -> list[DeadLetter]:
        try:
            response = self.clients.subscriber.pull(
                subscription=self.subscription, max_messages=max_messages,
                timeout=PULL_TIMEOUT_SECONDS,
            )
        except google_errors.DeadlineExceeded:
            return []  # nothing there: the server held the Pull until its deadline
        except Exception as exc:
            raise translate(exc, "pull from", self.subscription) from exc
        received = list(response.received_messages)
        if received:
            self._modify_deadline([m.ack_id for m in received], HOLD_SECONDS)
        return [DeadLetter.from_received(message) for message in received]

    def _modify_deadline(self, ack_ids: list[str], seconds: int) -> None:
        try:
            self.clients.subscriber.modify_ack_deadline(
                subscription=self.subscription, ack_ids=ack_ids,
                ack_deadline_seconds=seconds, timeout=ADMIN_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            raise translate(exc, "acknowledge on", self.subscription) from exc
