"""Topics and subscriptions: created on declare (idempotent, race-safe), or only verified.

Many workers declare the same queue at once when a job fans out: ``AlreadyExists`` is success,
so whoever loses the race carries on. With auto-creation off (least-privilege deployments),
every resource is checked with a get and a missing one is an error that names it.

On Google Cloud every call is a round trip of tens of milliseconds, so a queue's declare sends
its independent calls side by side (``concurrently``): its two topics, its dead-letter
subscription and a read of its subscription go out together, and only what was missing (a
subscription whose topic did not exist yet, the queue's subscription itself) takes a second
round. A queue that exists costs one round trip instead of four or five.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.api_core import exceptions as google_errors
from google.pubsub_v1 import DeadLetterPolicy, ExpirationPolicy, RetryPolicy, Subscription, Topic

from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.errors import PubSubChannelError, ResourceNotFound, translate
from vividly_tasks.transport.naming import dead_letter_id, short_name, subscription_path, topic_path

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Pub/Sub's smallest expiration TTL: temporary subscriptions of a killed process go after it.
TEMPORARY_SUBSCRIPTION_TTL_SECONDS = 24 * 3600
#: Pub/Sub's smallest retention, for temporary (reply, event, broadcast) subscriptions.
TEMPORARY_RETENTION_SECONDS = 600
ADMIN_TIMEOUT_SECONDS = 30.0
#: At most this many admin calls at once (``concurrently``): a plan over many queues reads
#: in waves rather than opening a thread per resource.
MAX_CONCURRENT_CALLS = 16


@dataclass(frozen=True)
class SubscriptionSpec:
    """What a queue's subscription looks like when we create it."""

    project: str
    subscription_id: str
    topic_id: str
    ack_deadline_seconds: int
    max_delivery_attempts: int
    retry_min_backoff_seconds: float
    retry_max_backoff_seconds: float
    temporary: bool = False

    @property
    def path(self) -> str:
        return subscription_path(self.project, self.subscription_id)

    @property
    def topic(self) -> str:
        return topic_path(self.project, self.topic_id)

    @property
    def dead_letter_topic(self) -> str | None:
        if self.temporary:
            return None
        return topic_path(self.project, dead_letter_id(self.subscription_id))

    @property
    def dead_letter_subscription(self) -> str | None:
        if self.temporary:
            return None
        return subscription_path(self.project, dead_letter_id(self.subscription_id))

    def to_subscription(self) -> Subscription:
        fields: dict[str, Any] = {
            "name": self.path,
            "topic": self.topic,
            "ack_deadline_seconds": self.ack_deadline_seconds,
            "retry_policy": RetryPolicy(
                minimum_backoff=datetime.timedelta(seconds=self.retry_min_backoff_seconds),
                maximum_backoff=datetime.timedelta(seconds=self.retry_max_backoff_seconds),
            ),
        }
        if self.temporary:
            fields["expiration_policy"] = ExpirationPolicy(
                ttl=datetime.timedelta(seconds=TEMPORARY_SUBSCRIPTION_TTL_SECONDS)
            )
            fields["message_retention_duration"] = datetime.timedelta(
                seconds=TEMPORARY_RETENTION_SECONDS
            )
        else:
            fields["dead_letter_policy"] = DeadLetterPolicy(
                dead_letter_topic=self.dead_letter_topic,
                max_delivery_attempts=self.max_delivery_attempts,
            )
        return Subscription(**fields)


class Provisioner:
    """Ensures topics and subscriptions exist; remembers what it has seen."""

    def __init__(self, clients: PubSubClients, *, auto_create: bool) -> None:
        self.clients = clients
        self.auto_create = auto_create
        self._known: set[str] = set()
        self._subscription_topics: dict[str, str] = {}
        self._lock = threading.Lock()

    def forget(self, path: str) -> None:
        """Drop a resource from the cache: the broker lost it (an emulator restart)."""
        with self._lock:
            self._known.discard(path)
            self._subscription_topics.pop(path, None)

    def ensure_topic(self, path: str) -> None:
        if path in self._known:
            return
        if self.auto_create:
            self._create_if_missing(
                lambda: self.clients.publisher.create_topic(
                    request=Topic(name=path), timeout=ADMIN_TIMEOUT_SECONDS
                ),
                "create topic", path,
            )
        else:
            call(lambda: self.clients.publisher.get_topic(
                topic=path, timeout=ADMIN_TIMEOUT_SECONDS), "get topic", path)
        self._known.add(path)

    def ensure_topic_exists(self, path: str) -> None:
        """Verify only (a passive declare), whatever auto_create says."""
        call(lambda: self.clients.publisher.get_topic(
            topic=path, timeout=ADMIN_TIMEOUT_SECONDS), "get topic", path)

    def ensure_subscription(self, spec: SubscriptionSpec) -> None:
        if spec.path in self._known:
            self._check_topic(spec, self._subscription_topics.get(spec.path, spec.topic))
            return
        if not self.auto_create and not spec.temporary:
            # Verify-only: the subscription must exist (its dead-letter policy came with it).
            # Temporary ones (remote control, replies, event receivers) are named after the
            # host and process, so nobody can create them in advance: those are always
            # created, on a topic that must exist (ensure_topic verifies it).
            topic = self.subscription_topic(spec.path)
        elif spec.dead_letter_topic and spec.dead_letter_subscription:
            topic = self._ensure_durable_subscription(spec)
        else:
            self.ensure_topic(spec.topic)
            created = self._create_if_missing(
                lambda: self.clients.subscriber.create_subscription(
                    request=spec.to_subscription(), timeout=ADMIN_TIMEOUT_SECONDS
                ),
                "create subscription", spec.path,
            )
            topic = spec.topic if created else self.subscription_topic(spec.path)
        self._check_topic(spec, topic)
        with self._lock:
            self._subscription_topics[spec.path] = topic
            self._known.add(spec.path)

    def _ensure_durable_subscription(self, spec: SubscriptionSpec) -> str:
        """A task queue's four resources in (at most) two rounds of calls; its topic.

        First round, side by side: both topics (created if missing), the dead-letter topic's
        retaining subscription (a dead-letter topic keeps what lands on it only if it has
        one; created if missing) and a read of the queue's subscription. Second round, only
        for what the first found missing: the retaining subscription, when its topic did not
        exist yet, and the queue's subscription (its dead-letter policy needs that topic).
        """
        dead_letter_topic, dead_letter_subscription = (spec.dead_letter_topic,
                                                       spec.dead_letter_subscription)
        assert dead_letter_topic and dead_letter_subscription, "a durable queue"
        retained: list[bool] = []
        existing: list[str | None] = []
        concurrently([
            lambda: self.ensure_topic(dead_letter_topic),
            lambda: self.ensure_topic(spec.topic),
            lambda: retained.append(self._plain_subscription_if_topic_exists(
                dead_letter_subscription, dead_letter_topic)),
            lambda: existing.append(self._existing_topic(spec.path)),
        ])
        created: list[bool] = []
        second_round: list[Callable[[], None]] = []
        if not retained[0]:
            second_round.append(lambda: self._ensure_plain_subscription(
                dead_letter_subscription, dead_letter_topic))
        if existing[0] is None:
            second_round.append(lambda: created.append(self._create_if_missing(
                lambda: self.clients.subscriber.create_subscription(
                    request=spec.to_subscription(), timeout=ADMIN_TIMEOUT_SECONDS
                ),
                "create subscription", spec.path,
            )))
        concurrently(second_round)
        if existing[0] is not None:
            return existing[0]
        return spec.topic if created[0] else self.subscription_topic(spec.path)

    def _plain_subscription_if_topic_exists(self, path: str, topic: str) -> bool:
        """Create a plain subscription (AlreadyExists is success); False if its topic does
        not exist (yet): the caller creates the topic, then tries again."""
        try:
            self._ensure_plain_subscription(path, topic)
        except ResourceNotFound:
            return False
        return True

    def _existing_topic(self, path: str) -> str | None:
        """The topic of an existing subscription; None if there is no such subscription."""
        try:
            return self.subscription_topic(path)
        except ResourceNotFound:
            return None

    @staticmethod
    def _check_topic(spec: SubscriptionSpec, topic: str) -> None:
        """A subscription has one topic for life: binding its queue to another exchange
        would leave it reading the old one while messages go to the new one."""
        if topic != spec.topic:
            raise PubSubChannelError(
                f"queue {short_name(spec.path)!r} is bound to exchange {short_name(topic)!r} "
                f"(its subscription {spec.path} reads {topic}); a Pub/Sub subscription cannot "
                f"change topics, so it cannot be bound to {short_name(spec.topic)!r}: delete "
                "the queue first, or use another queue name"
            )

    def _ensure_plain_subscription(self, path: str, topic: str) -> None:
        if path in self._known:
            return
        self._create_if_missing(
            lambda: self.clients.subscriber.create_subscription(
                request=Subscription(name=path, topic=topic), timeout=ADMIN_TIMEOUT_SECONDS
            ),
            "create subscription", path,
        )
        with self._lock:  # declares run their calls side by side (``concurrently``)
            self._known.add(path)

    def subscription_topic(self, path: str) -> str:
        """The topic a subscription is attached to (raises ResourceNotFound if it is absent)."""
        topic = self._subscription_topics.get(path)
        if topic is None:
            subscription = call(
                lambda: self.clients.subscriber.get_subscription(
                    subscription=path, timeout=ADMIN_TIMEOUT_SECONDS
                ),
                "get subscription", path,
            )
            topic = str(subscription.topic)
            with self._lock:
                self._subscription_topics[path] = topic
        return topic

    def subscription_exists(self, path: str) -> bool:
        try:
            self.subscription_topic(path)
        except ResourceNotFound:
            return False
        return True

    def delete_subscription(self, path: str) -> None:
        delete_if_present(lambda: self.clients.subscriber.delete_subscription(
            subscription=path, timeout=ADMIN_TIMEOUT_SECONDS), "delete subscription", path)
        with self._lock:
            self._known.discard(path)
            self._subscription_topics.pop(path, None)

    def delete_topic(self, path: str) -> None:
        delete_if_present(lambda: self.clients.publisher.delete_topic(
            topic=path, timeout=ADMIN_TIMEOUT_SECONDS), "delete topic", path)
        with self._lock:
            self._known.discard(path)

    def delete_subscription_quietly(self, path: str) -> None:
        """Delete at shutdown: a failure is logged, since the subscription expires anyway."""
        try:
            self.delete_subscription(path)
        except Exception as exc:
            logger.warning("could not delete temporary subscription %s: %s", path, exc)

    @staticmethod
    def _create_if_missing(create: Callable[[], object], action: str, path: str) -> bool:
        """Create; False if it existed already (another process won the race, or earlier)."""
        try:
            create()
            logger.info("created %s", path)
        except google_errors.AlreadyExists:
            return False
        except Exception as exc:
            raise translate(exc, action, path) from exc
        return True


def concurrently(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run independent calls side by side (each a round trip to Pub/Sub); their results in
    order. Every call finishes before the first failure, in order, is raised. A pool per use:
    threads do not survive a prefork worker's fork, and admin calls are few."""
    if len(calls) <= 1:
        return [call() for call in calls]
    try:
        with ThreadPoolExecutor(max_workers=min(len(calls), MAX_CONCURRENT_CALLS),
                                thread_name_prefix="pubsub-admin") as pool:
            # Each in a copy of the caller's context: a span open around the declare stays
            # the parent of the calls' own.
            futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
    except RuntimeError:
        # The interpreter is exiting (no new threads after it began): one after another.
        return [call() for call in calls]
    return [future.result() for future in futures]


def delete_if_present(delete: Callable[[], object], action: str, path: str) -> None:
    """Run one delete call; a resource that is gone already is no error."""
    try:
        delete()
    except google_errors.NotFound:
        pass
    except Exception as exc:
        raise translate(exc, action, path) from exc


def call(operation: Callable[[], T], action: str, resource: str) -> T:
    """Run one Pub/Sub call, translating Google's errors into the transport's."""
    try:
        return operation()
    except Exception as exc:
        raise translate(exc, action, resource) from exc
