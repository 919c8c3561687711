"""The Kombu channel over Pub/Sub: the AMQP surface (declare, bind, purge, delete, publish,
get, consume, cancel, qos) and what Pulls and the QoS ask of it.

Routing is AMQP's, done without subscription filters (``routing.py``): a message is published
to its exchange's topic with ``exchange`` and ``routing_key`` attributes, every queue bound to
that exchange has a subscription on the topic, and a queue whose bindings do not match acks
and drops the copy it got. Publishing therefore needs no binding table: any process can
publish to any queue. A durable queue's bindings are shared by every process (``bindings.py``).

Exchange types: direct, topic and fanout, and the default exchange ``""`` (``routing.py``);
a fanout queue's unmatched copies are acked before they are decoded.

Receiving: a consumer's Pulls (``receiver.py``) reserve room in the channel's ``QoS``
(``qos.py``), ``inbound.py`` turns what they bring into leased Kombu payloads, and the QoS
hands each to the consuming thread when it has a prefetch slot. Ack, reject and recover are
Kombu's ``virtual.Channel`` methods, which call the QoS: it owns every settle and release, and
``close`` lets it release what the channel still holds once no Pull of it is in flight.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from datetime import datetime
from functools import cached_property, partial
from queue import Empty
from typing import Any, Protocol, TypeVar

from google.api_core import exceptions as google_errors
from kombu.transport import virtual
from kombu.utils.encoding import safe_str

from vividly_tasks.transport import defaults, plain_messages, wire
from vividly_tasks.transport.bindings import BindingRecords
from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.command_fence import CommandFence
from vividly_tasks.transport.confirms import PublishPipeline
from vividly_tasks.transport.errors import (
    PubSubChannelError,
    PubSubConnectionError,
    ResourceNotFound,
    translate,
)
from vividly_tasks.transport.inbound import Inbound
from vividly_tasks.transport.leases import Lease
from vividly_tasks.transport.limits import DEFAULT_LIMITS, ReceiveLimits, accepted_compressions
from vividly_tasks.transport.naming import resource_id, short_name, topic_path
from vividly_tasks.transport.provisioning import Provisioner, SubscriptionSpec
from vividly_tasks.transport.publishing import Publisher
from vividly_tasks.transport.qos import Delivery
from vividly_tasks.transport.qos import QoS as ChannelQoS
from vividly_tasks.transport.receiver import (
    CONNECTION_CODES,
    QUIET_CODES,
    Puller,
    pull_metadata,
    status_code,
)
from vividly_tasks.transport.routing import QueueRoute
from vividly_tasks.transport.stubs import PullRequest, ReceivedMessage

T = TypeVar("T")

logger = logging.getLogger(__name__)

SUPPORTED_EXCHANGE_TYPES = frozenset({"direct", "fanout", "topic"})
#: Messages pulled at once for consumers that ack on receipt (remote control, events).
NO_ACK_PULL_SIZE = 100
#: How long closing a channel waits for its releases and acks to reach Pub/Sub.
CLOSE_FLUSH_TIMEOUT_SECONDS = 5.0
#: Purge: messages per Pull, the wait of a Pull that finds none, the whole pull-and-ack.
PURGE_PULL_SIZE = 1000
PURGE_PULL_TIMEOUT_SECONDS = 2.0
PURGE_BUDGET_SECONDS = 30.0
#: Environment variable that sets the prefix when the ``prefix`` transport option does not.
PREFIX_VARIABLE = "PUBSUB_PREFIX"


class ChannelConnection(Protocol):
    """What a channel uses of its connection, the Transport (transport.py), which imports
    this module: named here so that the two modules do not import each other."""

    lost: bool

    @property
    def clients(self) -> PubSubClients: ...
    @property
    def options(self) -> dict[str, Any]: ...
    @property
    def project(self) -> str: ...
    @property
    def provisioner(self) -> Provisioner: ...
    @property
    def command_fence(self) -> CommandFence: ...
    @property
    def binding_records(self) -> BindingRecords: ...

    def option(self, name: str, kind: type[T]) -> T:
        """A transport option converted to ``kind``, or the channel's default."""

    def ensure_receiving(self) -> None:
        """Make sure pulled messages wake the consuming thread."""

    def enqueue_delivery(self, channel: Channel, queue: str, payload: dict[str, Any], *,
                         after: str | None = None, broadcast: bool = False) -> None:
        """Hand a received message to the consuming thread."""

    def fail(self, error: Exception) -> None:
        """Raise ``error`` in the consuming thread (a connection error reconnects)."""


class Channel(virtual.Channel):
    """Pub/Sub channel."""

    #: The ledger of deliveries and every settle (qos.py).
    QoS = ChannelQoS
    #: Pub/Sub redelivers what we do not ack: nothing to restore; the QoS releases at close.
    do_restore = False
    supports_fanout = True
    #: Bodies travel as text when they are text (see wire.py), base64 only when binary.
    body_encoding = None  # type: ignore[assignment]

    #: Options an app may also read from the environment: their defaults (and why) are in
    #: ``defaults.py``, shared with ``vividly_tasks.settings.PubSubSettings``.
    default_prefix = defaults.PREFIX
    default_auto_create = defaults.AUTO_CREATE
    default_ack_deadline_seconds = defaults.ACK_DEADLINE_SECONDS
    default_max_lease_seconds = float(defaults.MAX_LEASE_SECONDS)
    default_max_delivery_attempts = defaults.MAX_DELIVERY_ATTEMPTS
    #: Retry policy of created subscriptions: backoff of a nacked or expired message.
    default_retry_min_backoff_seconds = 1.0
    default_retry_max_backoff_seconds = 600.0
    #: gRPC deadline of one task-queue Pull. Short, because such a Pull is never cancelled
    #: while it may still receive messages (see receiver.py): closing waits for it.
    #: The emulator answers an empty Pull ~0.94 s before its deadline: a 2 s Pull comes back
    #: after ~1.1 s, so an idle worker re-pulls about once a second and a closing one waits
    #: at most that long (3 s Pulls: every ~2.1 s, and up to 2.1 s added to every shutdown).
    default_pull_timeout_seconds = 2.0
    #: gRPC deadline of one Pull of an ack-on-receipt consumer (broadcasts, events), which is
    #: cancelled at once on close: long, so an idle worker makes few calls.
    default_broadcast_pull_timeout_seconds = 30.0
    #: Outstanding messages per channel when the consumer sets no prefetch count.
    default_max_outstanding_messages = 100
    #: Pull-ahead (pull_ahead.py): at most this many messages per prefetch slot leased and
    #: held beyond the prefetch count while a backlog exists, so a freed slot starts its next
    #: task without a Pull's round trip; 0 turns it off. A held message that finds no free
    #: slot within ``pull_ahead_hold_seconds`` is released for another worker.
    default_pull_ahead = defaults.PULL_AHEAD
    default_pull_ahead_hold_seconds = 1.0
    #: Seconds that basic_get (SimpleQueue.get_nowait) waits for a message.
    default_get_timeout_seconds = 1.0
    #: Deadline of a confirmed publish, retries included.
    default_publish_timeout_seconds = 60.0
    #: Pipelined publishing: at most this many messages unconfirmed, confirmations collected
    #: in the background (confirms.py); 0 confirms each publish before it returns.
    default_publish_in_flight = 0
    #: Content types accepted on receipt, others dead-lettered unread; None carries every
    #: type, and the consumer's own accept list decides what is deserialized (Kombu's rule).
    default_accept_content: tuple[str, ...] | None = None
    #: Receive limits (limits.py): compressions decoded (none unless listed), the most a
    #: compressed body may decode to, the most JSON structural characters and nesting levels.
    default_accept_compression: tuple[str, ...] = ()
    default_max_decoded_bytes = DEFAULT_LIMITS.max_decoded_bytes
    default_max_json_items = DEFAULT_LIMITS.max_json_items
    default_max_json_depth = DEFAULT_LIMITS.max_json_depth
    #: Exchanges of Celery's events (its ``event_exchange`` setting), published in the
    #: background: events are lossy by Celery's contract, and a draining worker sends three
    #: per task.
    default_event_exchanges: tuple[str, ...] = ("celeryev",)
    #: Longest hold of a message published right after a remote-control command, waiting
    #: for the command to be delivered first (command_fence.py); 0 turns the fence off.
    default_command_fence_seconds = 2.0

    connection: ChannelConnection

    def __init__(self, connection: ChannelConnection, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        #: Kept past close(): a task that outlives its channel's connection still acks.
        self.pubsub = connection.clients
        self._routes: dict[str, QueueRoute] = {}
        self._queue_options: dict[str, dict[str, Any]] = {}
        self._pullers: dict[str, Puller] = {}
        self._temporary_subscriptions: set[str] = set()
        self._stopping: list[Puller] = []  # cancelled consumers whose last Pull may be in flight
        self._kick_turn = 0

    @property
    def qos(self) -> ChannelQoS:
        """The ledger of this channel's deliveries (qos.py), made on first use as in Kombu."""
        if self._qos is None:
            self._qos = self.QoS(self)
        qos: ChannelQoS = self._qos
        return qos

    # --- options -------------------------------------------------------------------------
    @property
    def transport_options(self) -> dict[str, Any]:
        return self.connection.options

    @cached_property
    def project(self) -> str:
        return self.connection.project

    @property
    def binding_records(self) -> BindingRecords:
        return self.connection.binding_records

    @cached_property
    def prefix(self) -> str:
        # Read when the channel is made, never at import: the environment of the process
        # that connects, as Google's clients read PUBSUB_EMULATOR_HOST.
        if "prefix" in self.connection.options:
            return self.connection.option("prefix", str)
        return os.environ.get(PREFIX_VARIABLE, self.default_prefix)

    @cached_property
    def auto_create(self) -> bool:
        return self.connection.option("auto_create", bool)

    @cached_property
    def ack_deadline_seconds(self) -> int:
        return self.connection.option("ack_deadline_seconds", int)

    @cached_property
    def max_delivery_attempts(self) -> int:
        return self.connection.option("max_delivery_attempts", int)

    @cached_property
    def pull_timeout_seconds(self) -> float:
        return self.connection.option("pull_timeout_seconds", float)

    @cached_property
    def broadcast_pull_timeout_seconds(self) -> float:
        return self.connection.option("broadcast_pull_timeout_seconds", float)

    @cached_property
    def max_outstanding_messages(self) -> int:
        return self.connection.option("max_outstanding_messages", int)

    @cached_property
    def get_timeout_seconds(self) -> float:
        return self.connection.option("get_timeout_seconds", float)

    @cached_property
    def publish_timeout_seconds(self) -> float:
        return self.connection.option("publish_timeout_seconds", float)

    @cached_property
    def publish_pipeline(self) -> PublishPipeline | None:
        in_flight = self.connection.option("publish_in_flight", int)
        if in_flight <= 0:
            return None
        return self.pubsub.publish_pipeline(in_flight)

    def flush_publishes(self, timeout: float | None = None) -> None:
        """Wait until every pipelined publish of this process is confirmed; raise
        ``PublishFailed`` naming those that failed (a no-op when publishes are confirmed one
        at a time)."""
        if self.publish_pipeline is not None:
            self.publish_pipeline.flush(
                self.publish_timeout_seconds if timeout is None else timeout
            )

    @cached_property
    def accepted_content_types(self) -> frozenset[str] | None:
        names = listed(self.transport_options.get("accept_content", self.default_accept_content))
        if not names:
            return None
        return frozenset(CONTENT_TYPE_ALIASES.get(v, v) for v in names)

    @cached_property
    def receive_limits(self) -> ReceiveLimits:
        names = listed(self.transport_options.get("accept_compression",
                                                  self.default_accept_compression))
        try:
            compressions = accepted_compressions(names)
        except ValueError as exc:
            raise PubSubChannelError(str(exc)) from None
        return ReceiveLimits(
            accept_compression=compressions,
            max_decoded_bytes=self.connection.option("max_decoded_bytes", int),
            max_json_items=self.connection.option("max_json_items", int),
            max_json_depth=self.connection.option("max_json_depth", int),
        )

    @cached_property
    def event_exchanges(self) -> frozenset[str]:
        return frozenset(listed(
            self.transport_options.get("event_exchanges", self.default_event_exchanges)
        ))

    @cached_property
    def plain_message_tasks(self) -> dict[str, str]:
        return plain_messages.parse_bindings(self.transport_options.get("plain_message_tasks"))

    @property
    def pull_rpc(self) -> Any:
        return self.pubsub.data_plane.pull

    # --- names and routes ----------------------------------------------------------------
    def subscription_spec(self, queue: str, topic_name: str) -> SubscriptionSpec:
        options = self._queue_options.get(queue, {})
        return SubscriptionSpec(
            project=self.project,
            subscription_id=resource_id(self.prefix, queue),
            topic_id=resource_id(self.prefix, topic_name),
            ack_deadline_seconds=self.ack_deadline_seconds,
            max_delivery_attempts=self.max_delivery_attempts,
            retry_min_backoff_seconds=self.connection.option("retry_min_backoff_seconds", float),
            retry_max_backoff_seconds=self.connection.option("retry_max_backoff_seconds", float),
            temporary=bool(options.get("auto_delete") or options.get("exclusive")),
        )

    def exchange_topic(self, exchange: str) -> str:
        return topic_path(self.project, resource_id(self.prefix, exchange))

    def route_for(self, queue: str) -> QueueRoute:
        """The queue's route; a queue never bound here is read from its own subscription."""
        route = self._routes.get(queue)
        if route is None:
            spec = self.subscription_spec(queue, queue)
            provisioner = self.connection.provisioner
            if provisioner.subscription_exists(spec.path):
                topic = provisioner.subscription_topic(spec.path)
                spec = replace(spec, topic_id=short_name(topic))
            else:
                provisioner.ensure_subscription(spec)  # raises when auto-creation is off
            route = self._routes[queue] = QueueRoute(queue, spec, shares=not spec.temporary)
            self._remember_if_temporary(spec)
            if route.shares:  # not bound here: what others bound decides
                route.read_shared(self.binding_records)
        return route

    def _remember_if_temporary(self, spec: SubscriptionSpec) -> None:
        if spec.temporary:
            self._temporary_subscriptions.add(spec.path)

    # --- declarations ----------------------------------------------------------------------
    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        arguments: Any = None,
        nowait: bool = False,
        passive: bool = False,
    ) -> None:
        if type not in SUPPORTED_EXCHANGE_TYPES:
            raise PubSubChannelError(
                f"exchange {exchange!r} is of type {type!r}: the Pub/Sub transport supports "
                f"{', '.join(sorted(SUPPORTED_EXCHANGE_TYPES))} exchanges"
            )
        if exchange:
            if passive:
                self.connection.provisioner.ensure_topic_exists(self.exchange_topic(exchange))
            else:
                self.connection.provisioner.ensure_topic(self.exchange_topic(exchange))
        if not passive:
            super().exchange_declare(
                exchange, type, durable, auto_delete, arguments, nowait, passive=False
            )

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_options[queue] = kwargs

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return bool(self.connection.provisioner.subscription_exists(
            self.subscription_spec(queue, queue).path
        ))

    def queue_bind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        exchange = exchange or ""
        if not exchange:
            self.route_for(queue)
            return
        kind = self.typeof(exchange).type
        spec = self.subscription_spec(queue, exchange)
        # Refuses a queue whose subscription reads another exchange's topic.
        self.connection.provisioner.ensure_subscription(spec)
        self._remember_if_temporary(spec)
        route = self._routes.get(queue)
        if route is None:
            route = self._routes[queue] = QueueRoute(queue, spec, shares=not spec.temporary)
        route.spec, route.kind = spec, kind
        if route.routing_keys is None:
            route.routing_keys = set()
        route.routing_keys.add(routing_key)
        if route.shares:
            self.binding_records.write(short_name(spec.path), (kind, routing_key),
                                       create=self.auto_create)
        # Kombu's own binding table serves list_bindings() and queue_delete().
        self.state.binding_declare(queue, exchange, routing_key, arguments)

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Forget a binding here and in the shared records (its copies are dropped again)."""
        route = self._routes.get(queue)
        if route is not None and route.routing_keys is not None:
            route.routing_keys.discard(routing_key)
        if exchange and (route is None or route.shares):
            kind = self.typeof(exchange).type
            self.binding_records.delete(resource_id(self.prefix, queue), (kind, routing_key))
        if route is not None:
            route.read_at = 0.0  # the next unmatched message reads the records again
        self.state.binding_delete(queue, exchange or "", routing_key)

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False,
                     **kwargs: Any) -> int:
        """Delete the queue's subscription and what was made for it (its dead-letter topic
        and that topic's subscription); this channel's consumers of it stop first.

        ``if_unused``: refused while a consumer of this process reads it (Pub/Sub does not
        say who else pulls). ``if_empty``: refused always, since Pub/Sub cannot tell whether
        a subscription holds messages without leasing them; purge first, then delete.
        Returns 0 (the messages deleted with it are not counted).
        """
        if if_empty:
            raise PubSubChannelError(
                f"queue_delete({queue!r}, if_empty=True): Pub/Sub cannot tell whether a "
                "subscription is empty without taking its messages; purge it, then delete"
            )
        consumers = [tag for tag, name in self._tag_to_queue.items() if name == queue]
        if if_unused and consumers:
            raise PubSubChannelError(
                f"queue_delete({queue!r}, if_unused=True): {len(consumers)} consumer(s) of "
                "this process read it"
            )
        for tag in consumers:
            self.basic_cancel(tag)
        route = self._routes.pop(queue, None)
        spec = route.spec if route else self.subscription_spec(queue, queue)
        provisioner = self.connection.provisioner
        provisioner.delete_subscription(spec.path)
        if spec.dead_letter_subscription:
            provisioner.delete_subscription(spec.dead_letter_subscription)
        if spec.dead_letter_topic:
            provisioner.delete_topic(spec.dead_letter_topic)
        if not spec.temporary:
            self.binding_records.delete_all(short_name(spec.path))
        self._temporary_subscriptions.discard(spec.path)
        self.state.queue_bindings_delete(queue)
        return 0

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.queue_delete(queue)

    def queue_purge(self, queue: str, **kwargs: Any) -> int:
        """Drop every message of an existing queue; how many were waiting.

        The waiting ones are pulled and acked (counted); a seek to now then drops the rest,
        those leased by consumers at that moment (not counted). A queue that does not
        exist is a channel error, as in AMQP; nothing is created.
        """
        if not self._has_queue(queue):
            raise ResourceNotFound(
                f"queue {queue!r} does not exist (subscription "
                f"{self.subscription_spec(queue, queue).path}): nothing to purge"
            )
        path = self.route_for(queue).spec.path
        purged = self._ack_waiting(path)
        try:
            self.pubsub.subscriber.seek(
                request={"subscription": path, "time": datetime.now().astimezone()},
                timeout=30,
            )
        except Exception as exc:
            raise translate(exc, "seek", path) from exc
        return purged

    def _purge(self, queue: str) -> int:
        return self.queue_purge(queue)

    def _ack_waiting(self, path: str) -> int:
        """Pull and ack until a Pull comes back empty (or the time budget is spent)."""
        count = 0
        deadline = time.monotonic() + PURGE_BUDGET_SECONDS
        while time.monotonic() < deadline:
            request = PullRequest(subscription=path, max_messages=PURGE_PULL_SIZE)
            try:
                response = self.pull_rpc(request, timeout=PURGE_PULL_TIMEOUT_SECONDS,
                                         metadata=pull_metadata(path))
            except Exception as exc:
                if status_code(exc) in QUIET_CODES:
                    break
                raise translate(exc, "pull from", path) from exc
            ack_ids = [received.ack_id for received in response.received_messages]
            if not ack_ids:
                break
            self.pubsub.data_plane.acknowledge(path, ack_ids, timeout=30)
            count += len(ack_ids)
        return count

    def _size(self, queue: str) -> int:
        # Pub/Sub has no cheap exact count (only Cloud Monitoring's delayed metric).
        return 0

    # --- publishing ------------------------------------------------------------------------
    @cached_property
    def publisher(self) -> Publisher:
        return Publisher(
            pubsub=self.pubsub,
            provisioner=self.connection.provisioner,
            exchange_type=lambda exchange: str(self.typeof(exchange).type),
            topic_for=self._publish_topic,
            event_exchanges=self.event_exchanges,
            timeout_seconds=self.publish_timeout_seconds,
            auto_create=self.auto_create,
            pipeline=self.publish_pipeline,
            on_confirmed=self.transport_options.get("on_publish_confirmed"),
        )

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any
    ) -> None:
        self.publisher.publish(message, exchange or "", routing_key or "")

    def _publish_topic(self, exchange: str, routing_key: str) -> str:
        if exchange:
            return self.exchange_topic(exchange)
        return self.route_for(routing_key).spec.topic

    # --- consuming -------------------------------------------------------------------------
    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        route = self.route_for(queue)
        result = super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        puller = self._pullers.get(queue)
        if puller is None:
            puller = self._pullers[queue] = Puller(self, route, no_ack=no_ack)
            self.connection.ensure_receiving()
            if no_ack and route.fanout:
                self.connection.command_fence.note_listening()
        puller.kick()
        return result

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            puller = self._pullers.pop(queue, None)
            if puller is not None:
                puller.stop()
                self._stopping.append(puller)
            self.qos.release_queue(queue)  # held ahead for the consumer
        return result

    def basic_qos(self, prefetch_size: int = 0, prefetch_count: int = 0,
                  apply_global: bool = False) -> None:
        super().basic_qos(prefetch_size, prefetch_count, apply_global)
        self.qos.prefetch_changed()
        self.kick_pullers()

    def kick_pullers(self, skip: Puller | None = None) -> None:
        pullers = list(self._pullers.values())
        # Consumers take turns at freed room, so none waits forever behind the others.
        self._kick_turn = turn = (self._kick_turn + 1) % max(1, len(pullers))
        for puller in pullers[turn:] + pullers[:turn]:
            if puller is not skip:
                puller.kick()

    def reserve(self, no_ack: bool, holding: int = 0) -> int:
        """Claim room for up to N messages in the next Pull (qos.py; 0: do not pull)."""
        if no_ack:
            return NO_ACK_PULL_SIZE
        consumers = sum(1 for puller in self._pullers.values() if not puller.no_ack)
        return self.qos.reserve(consumers, holding, default_limit=self.max_outstanding_messages)

    def unreserve(self, count: int) -> None:
        self.qos.unreserve(count)

    def note_pull(self, asked: int, got: int, seconds: float) -> None:
        self.qos.note_pull(asked, got, seconds)

    def deliver(self, delivery: Delivery) -> None:
        """To the consuming thread: a task-queue message the QoS has a prefetch slot for."""
        queue, payload, after = delivery
        self.connection.enqueue_delivery(self, queue, payload, after=after)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """One message or None (``SimpleQueue.get_nowait``); with ``no_ack`` it is acked at
        once and never comes back, as in AMQP."""
        try:
            payload = self._get_one(queue, no_ack=no_ack)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        return self._get_one(queue, timeout=timeout)

    def _get_one(
        self, queue: str, *, no_ack: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """One message now; Empty if none."""
        route = self.route_for(queue)
        request = PullRequest(subscription=route.spec.path, max_messages=1)
        try:
            response = self.pull_rpc(
                request, timeout=timeout or self.get_timeout_seconds,
                metadata=pull_metadata(route.spec.path),
            )
        except Exception as exc:
            if status_code(exc) in QUIET_CODES:
                raise Empty() from None
            raise self.pull_error(route, exc) from exc
        for received in response.received_messages:
            payload = self.accept(route, received, no_ack=no_ack)
            if payload is not None:
                return payload
        raise Empty()

    def on_pulled(self, puller: Puller, received: list[Any], *, stopped: bool) -> None:
        """Runs on a gRPC thread: lease, check and queue each message for delivery."""
        for message in received:
            if stopped or self.closed:  # arrived after the consumer stopped: give it back
                self.pubsub.background.set_deadline(puller.route.spec.path, message.ack_id, 0)
                continue
            payload = self.accept(puller.route, message, no_ack=puller.no_ack)
            after = message.message.attributes.get(wire.AFTER_ATTRIBUTE)
            if payload is not None and not puller.no_ack:
                self.qos.admit(payload["properties"]["delivery_tag"],
                               (puller.route.queue, payload, after))
            elif payload is not None:
                self.connection.enqueue_delivery(
                    self, puller.route.queue, payload,
                    after=after, broadcast=puller.route.fanout,
                )

    @cached_property
    def inbound(self) -> Inbound:
        return Inbound(
            pubsub=self.pubsub,
            binding_records=self.binding_records,
            plain_message_tasks=self.plain_message_tasks,
            accepted_content_types=self.accepted_content_types,
            ack_deadline_seconds=self.ack_deadline_seconds,
            max_lease_seconds=self.connection.option("max_lease_seconds", float),
            max_delivery_attempts=self.max_delivery_attempts,
            on_leased=self.qos.leased,
            limits=self.receive_limits,
        )

    def accept(self, route: QueueRoute, received: Any, *, no_ack: bool) -> dict[str, Any] | None:
        """The Kombu payload of a received message, leased; None if it was settled here."""
        return self.inbound.accept(route, received, no_ack=no_ack)

    # --- settling (qos.py settles; these are what it and the worker ask of the channel) ----
    def refill_soon(self) -> None:
        """A slot is free again: the next Pull starts on its own thread (pull_starter.py)."""
        self.pubsub.pull_starter.kick(self, self.kick_pullers)

    def set_dead_letter_reason(self, delivery_tag: str, reason: str) -> None:
        """Say why a message is about to be rejected; the dead-letter copy carries it."""
        self.qos.set_dead_letter_reason(delivery_tag, reason)

    def note_started(self, delivery_tag: str) -> None:
        """The consumer began working on this message (a Celery task handed to the pool):
        releasing it from now on counts as a failed attempt (qos.py)."""
        self.qos.note_started(delivery_tag)

    def dead_letter(self, lease: Lease, reason: str) -> None:
        """Send a rejected message to its queue's dead-letter topic with the reason."""
        route = self._route_of_subscription(lease.subscription)
        received = ReceivedMessage(ack_id=lease.ack_id, message=lease.original)
        self.inbound.dead_letter(route, received, reason)

    def renew(self, lease: Lease) -> bool:
        """Renew a released, never-started message (inbound.py); False if it cannot be."""
        try:
            route = self._route_of_subscription(lease.subscription)
        except PubSubChannelError:
            return False
        return self.inbound.renew(route, lease)

    def _route_of_subscription(self, path: str) -> QueueRoute:
        for route in self._routes.values():
            if route.spec.path == path:
                return route
        raise PubSubChannelError(f"no queue of this channel reads {path}")

    # --- errors ----------------------------------------------------------------------------
    def pull_error(self, route: QueueRoute, exc: BaseException) -> Exception:
        code = status_code(exc)
        if code in CONNECTION_CODES:
            return PubSubConnectionError(
                f"Pub/Sub unavailable while pulling {route.spec.path}: {safe_str(exc)}"
            )
        if code is not None and code.name == "NOT_FOUND":
            if self.auto_create:
                # We created it, so the broker lost it (an emulator restart): reconnecting
                # declares it again.
                return PubSubConnectionError(f"{route.spec.path} vanished (broker restarted?)")
            return ResourceNotFound(f"{route.spec.path} does not exist (pull from)")
        if code is not None and code.name == "PERMISSION_DENIED":
            return translate(google_errors.PermissionDenied(str(exc)), "pull from", route.spec.path)
        return PubSubChannelError(f"pull from {route.spec.path} failed: {safe_str(exc)}")

    def report_pull_error(self, route: QueueRoute, exc: BaseException) -> None:
        """Runs on a gRPC thread: the error surfaces in the consuming thread, which reconnects."""
        if self.closed:
            return
        self.connection.fail(self.pull_error(route, exc))

    # --- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        pullers = list(self._pullers.values()) + self._stopping
        for puller in pullers:
            puller.stop()
        self._pullers.clear()
        connection = self.connection
        try:
            # Release only once no Pull of ours is in flight: Pub/Sub would hand the
            # released messages straight back to it.
            started = time.monotonic()
            deadline = started + self.pull_timeout_seconds + 1
            for puller in pullers:
                puller.wait_idle(max(0.0, deadline - time.monotonic()))
            logger.debug("closing: last pulls done after %.3f s", time.monotonic() - started)
            self._stopping.clear()
            self.qos.restore_unacked_once()  # releases, or keeps leases after a lost connection
            for path in list(self._temporary_subscriptions):
                self.pubsub.background.call(
                    partial(connection.provisioner.delete_subscription_quietly, path)
                )
            self._temporary_subscriptions.clear()
            if "publish_pipeline" in self.__dict__ and self.publish_pipeline is not None:
                # A producer pool's close, app.close(): everything published is on Pub/Sub
                # (or reported) before the connection goes.
                self.publish_pipeline.flush_quietly(self.publish_timeout_seconds)
            # Send the releases now: a worker may exit right after closing its channels.
            self.pubsub.background.flush(CLOSE_FLUSH_TIMEOUT_SECONDS)
        finally:
            super().close()


CONTENT_TYPE_ALIASES = {
    "json": "application/json",
    "pickle": "application/x-python-serialize",
    "yaml": "application/x-yaml",
    "msgpack": "application/x-msgpack",
}


def listed(value: Any) -> list[str]:
    """A list option given as a list or as comma-separated text, without empty names."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else value
    return [str(part).strip() for part in parts if str(part).strip()]
