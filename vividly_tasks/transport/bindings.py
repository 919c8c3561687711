"""A queue's bindings as shared state: records in Pub/Sub itself that every process reads.

A queue is a subscription on its exchange's topic, so it receives every message of the
exchange; its bindings decide which of them are its own (``channel.py``). For that decision
to be the same in every process, a durable queue's binding keys are kept in Pub/Sub, not in
the memory of the channel that declared them:

* the queue's records topic ``<subscription id>~bindings`` (nothing is ever published to it);
* one subscription per binding on that topic, ``<subscription id>~binding~<type>~<key>``:
  the exchange type (direct, topic or fanout: it decides how the key matches) and the key
  percent-encoded (UTF-8), with no expiry.

Creating a record is atomic and idempotent (a concurrent declare gets AlreadyExists), and
one ListTopicSubscriptions call reads all of a queue's keys, so two processes that bind the
same queue with different keys both see both. Why not the alternatives: subscription filters
are immutable and the emulator ignores them; resource labels are limited to lower-case
``[a-z0-9_-]`` and the emulator cannot update a subscription's labels.

Temporary queues (auto-delete or exclusive: replies, broadcasts, event receivers) belong to
one process, which is their only consumer: their bindings stay in that process's memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from urllib.parse import unquote

from google.api_core import exceptions as google_errors
from google.pubsub_v1 import ExpirationPolicy, Subscription, Topic

from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.errors import PubSubChannelError, translate
from vividly_tasks.transport.naming import (
    ALLOWED_CHARACTERS,
    MAX_ID_LENGTH,
    short_name,
    subscription_path,
    topic_path,
)
from vividly_tasks.transport.provisioning import ADMIN_TIMEOUT_SECONDS, delete_if_present

logger = logging.getLogger(__name__)

RECORDS_SUFFIX = "~bindings"
RECORD_INFIX = "~binding~"
#: Records never expire (Pub/Sub's default would delete an idle subscription after 31 days).
NEVER = ExpirationPolicy()


def encode_key(routing_key: str) -> str:
    """A routing key as id characters: allowed ones as they are, the rest as %XX of UTF-8."""
    return "".join(
        char if char in ALLOWED_CHARACTERS
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in routing_key
    )


#: A binding as recorded: the exchange type and the binding key.
Binding = tuple[str, str]


def records_topic(project: str, subscription_id: str) -> str:
    """The topic that a queue's binding records are attached to."""
    return topic_path(project, f"{subscription_id}{RECORDS_SUFFIX}")


def record_path(project: str, subscription_id: str, binding: Binding) -> str:
    """The subscription that records one binding of a queue."""
    kind, routing_key = binding
    head = f"{subscription_id}{RECORD_INFIX}{kind}~"
    record_id = f"{head}{encode_key(routing_key)}"
    if len(record_id) > MAX_ID_LENGTH:
        room = MAX_ID_LENGTH - len(head)
        raise PubSubChannelError(
            f"binding key {routing_key[:40]!r}... of queue {subscription_id!r} is too long "
            f"to be shared across processes: at most {room} characters once encoded"
        )
    return subscription_path(project, record_id)


def record_subscription(project: str, subscription_id: str, binding: Binding) -> Subscription:
    """A binding record as it is created (no expiry)."""
    return Subscription(name=record_path(project, subscription_id, binding),
                        topic=records_topic(project, subscription_id), expiration_policy=NEVER)


class BindingRecords:
    """Reads and writes the binding records of queues (one instance per connection)."""

    def __init__(self, clients: PubSubClients, project: str) -> None:
        self.clients = clients
        self.project = project
        self._written: set[str] = set()

    def records_topic(self, subscription_id: str) -> str:
        return records_topic(self.project, subscription_id)

    def record_path(self, subscription_id: str, binding: Binding) -> str:
        return record_path(self.project, subscription_id, binding)

    def write(self, subscription_id: str, binding: Binding, *, create: bool) -> None:
        """Record a binding (``create=False``: verify only, a warning if absent)."""
        path = self.record_path(subscription_id, binding)
        if path in self._written:
            return
        topic = self.records_topic(subscription_id)
        if not create:
            if binding not in self.read(subscription_id):
                logger.warning(
                    "binding %r of %s is not recorded (auto-creation is off: `vividly "
                    "provision` records it); only this process knows it", binding,
                    subscription_id,
                )
            self._written.add(path)
            return
        def create_record() -> None:
            self._create(lambda: self.clients.subscriber.create_subscription(
                request=record_subscription(self.project, subscription_id, binding),
                timeout=ADMIN_TIMEOUT_SECONDS))

        try:
            try:
                # The record first: once a queue's bindings are recorded (every declare after
                # the first), one round trip, AlreadyExists, instead of two.
                create_record()
            except google_errors.NotFound:  # no records topic yet: the queue's first binding
                self._create(lambda: self.clients.publisher.create_topic(
                    request=Topic(name=topic), timeout=ADMIN_TIMEOUT_SECONDS))
                create_record()
        except Exception as exc:
            raise translate(exc, "record binding", path) from exc
        self._written.add(path)

    def read(self, subscription_id: str) -> frozenset[Binding]:
        """Every binding recorded for the queue (empty if none, or no records topic)."""
        topic = self.records_topic(subscription_id)
        head = f"{subscription_id}{RECORD_INFIX}"
        try:
            paths = self.clients.publisher.list_topic_subscriptions(
                request={"topic": topic}, timeout=ADMIN_TIMEOUT_SECONDS
            )
            names = [short_name(str(path)) for path in paths]
        except google_errors.NotFound:
            return frozenset()
        except Exception as exc:
            raise translate(exc, "list bindings of", topic) from exc
        bindings = []
        for name in names:
            kind, tilde, key = name[len(head):].partition("~")
            if name.startswith(head) and tilde:
                bindings.append((kind, unquote(key)))
        return frozenset(bindings)

    def delete(self, subscription_id: str, binding: Binding) -> None:
        path = self.record_path(subscription_id, binding)
        delete_if_present(lambda: self.clients.subscriber.delete_subscription(
            subscription=path, timeout=ADMIN_TIMEOUT_SECONDS), "delete binding record", path)
        self._written.discard(path)

    def delete_all(self, subscription_id: str) -> None:
        """Remove a deleted queue's records and their topic."""
        for binding in self.read(subscription_id):
            self.delete(subscription_id, binding)
        topic = self.records_topic(subscription_id)
        delete_if_present(lambda: self.clients.publisher.delete_topic(
            topic=topic, timeout=ADMIN_TIMEOUT_SECONDS), "delete topic", topic)

    @staticmethod
    def _create(create: Callable[[], object]) -> None:
        with contextlib.suppress(google_errors.AlreadyExists):  # a racing declare made it
            create()
