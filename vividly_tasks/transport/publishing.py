"""Publishing: a Kombu message onto its exchange's topic, confirmed or in the background.

By default every publish a caller waits on returns only once Pub/Sub has the message (as
AMQP's publisher confirms), retrying transient errors up to ``publish_timeout_seconds``, or
raises. With the ``publish_in_flight`` option (N > 0) publishes are pipelined instead: they
return once queued and are confirmed in the background, at most N unconfirmed, every failure
reported (confirms.py). Only Celery's events and remote-control replies, lossy by Celery's own
contract, go out unconfirmed. A remote-control command is always confirmed before it returns,
and what the process publishes next carries its id (command_fence.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as google_errors

from vividly_tasks.transport import tracing, wire
from vividly_tasks.transport.clients import PubSubClients
from vividly_tasks.transport.command_fence import RECENT_COMMANDS
from vividly_tasks.transport.confirms import PublishPipeline
from vividly_tasks.transport.errors import PUBSUB_MAX_MESSAGE_BYTES, MessageTooLarge, translate
from vividly_tasks.transport.provisioning import Provisioner
from vividly_tasks.transport.stubs import PubsubMessage

TRANSIENT_DELIVERY_MODE = 1
#: Celery's remote-control exchanges (``celery.pidbox``, ``reply.celery.pidbox``).
PIDBOX_SUFFIX = ".pidbox"


@dataclass
class Publisher:
    """One channel's publishing. ``exchange_type`` and ``topic_for`` come from the channel,
    which knows the declared exchanges and the queues' routes."""

    pubsub: PubSubClients
    provisioner: Provisioner
    exchange_type: Callable[[str], str]
    topic_for: Callable[[str, str], str]
    event_exchanges: frozenset[str]
    timeout_seconds: float
    auto_create: bool
    #: Pipelined publishing (the ``publish_in_flight`` option), or None: one at a time.
    pipeline: PublishPipeline | None = None
    #: The ``on_publish_confirmed`` option: told the labels of pipelined publishes confirmed.
    on_confirmed: Callable[[list[str]], None] | None = None

    def publish(self, message: dict[str, Any], exchange: str, routing_key: str) -> None:
        spans = tracing.hooks
        if spans is None:
            self._publish(message, exchange, routing_key, None)
            return
        properties = message.setdefault("properties", {})
        if self.fire_and_forget(exchange, properties):  # events: lossy, and never traced
            self._publish(message, exchange, routing_key, None)
            return
        pipelined = self.pipeline is not None and not self.is_command(exchange)
        span = spans.start_publish(message.setdefault("headers", {}), pipelined=pipelined)
        try:
            self._publish(message, exchange, routing_key, span)
        except BaseException as exc:
            spans.failed(span, exc)
            raise

    def _publish(self, message: dict[str, Any], exchange: str, routing_key: str,
                 span: Any) -> None:
        """``publish``, with the message's producer span (tracing.py) or None."""
        body, body_encoding = wire.text_body(message["body"], message.get("content-encoding"))
        message["body"] = body
        properties = message.setdefault("properties", {})
        properties["body_encoding"] = body_encoding
        properties.setdefault("delivery_info", {}).update(
            exchange=exchange, routing_key=routing_key
        )
        envelope = wire.encode(message)
        attributes = envelope.attributes
        size = len(envelope.data) + sum(map(len, attributes)) + sum(map(len, attributes.values()))
        if size > PUBSUB_MAX_MESSAGE_BYTES:
            what = attributes.get("task") or f"message to {exchange or routing_key!r}"
            raise MessageTooLarge(
                f"{what} is {size:,} bytes; Pub/Sub's limit is {PUBSUB_MAX_MESSAGE_BYTES:,} bytes "
                "per message: pass a reference (a storage URI) instead of the payload"
            )
        topic = self.topic_for(exchange, routing_key)
        pubsub_message = PubsubMessage(data=envelope.data, attributes=envelope.attributes)
        if span is None and self.fire_and_forget(exchange, properties):
            self.pubsub.background.publish(topic, pubsub_message)
            return
        pipelined = self.pipeline is not None and not self.is_command(exchange)
        if span is not None:
            spans = tracing.hooks
            if spans is not None:
                spans.prepared(span, topic, pubsub_message, pipelined=pipelined)
        if self.is_command(exchange):
            message_id = self.publish_confirmed(topic, pubsub_message)
            RECENT_COMMANDS.note(message_id)
            self._confirmed(span, message_id)
            return
        marker = RECENT_COMMANDS.marker()
        if marker is not None:
            pubsub_message.attributes[wire.AFTER_ATTRIBUTE] = marker
        if self.pipeline is not None:
            self.pipeline.submit(
                topic, pubsub_message, timeout_seconds=self.timeout_seconds,
                recreate_topic=self.recreate_topic if self.auto_create else None,
                on_confirmed=self.on_confirmed, span=span,
            )
            return
        self._confirmed(span, self.publish_confirmed(topic, pubsub_message))

    @staticmethod
    def _confirmed(span: Any, message_id: str) -> None:
        if span is not None and (spans := tracing.hooks) is not None:
            spans.confirmed(span, message_id)

    def fire_and_forget(self, exchange: str, properties: dict[str, Any]) -> bool:
        """Whether a publish may return before Pub/Sub has it: only Celery's events and its
        remote-control replies (transient, to a direct ``*.pidbox`` exchange), which Celery
        itself treats as lossy. A failure is logged by the background thread with the count
        of messages lost. Every other publish is confirmed or raises, remote-control commands
        too (fanout to ``celery.pidbox``): a ``revoke`` must be on Pub/Sub before the caller
        publishes the task it revokes, or the worker can receive the task first."""
        if exchange in self.event_exchanges:
            return True
        return (exchange.endswith(PIDBOX_SUFFIX)
                and properties.get("delivery_mode") == TRANSIENT_DELIVERY_MODE
                and self.exchange_type(exchange) != "fanout")

    def is_command(self, exchange: str) -> bool:
        """A remote-control command (``revoke``, ``inspect``): a broadcast to ``*.pidbox``."""
        return exchange.endswith(PIDBOX_SUFFIX) and self.exchange_type(exchange) == "fanout"

    def recreate_topic(self, topic: str) -> None:
        """Create a topic that was declared once and is gone (the broker lost its state)."""
        self.provisioner.forget(topic)
        self.provisioner.ensure_topic(topic)

    def publish_confirmed(self, topic: str, message: Any) -> str:
        """Return (its message id) only once Pub/Sub has the message, or raise."""
        calls = self.pubsub.data_plane
        deadline = time.monotonic() + self.timeout_seconds
        delay = 0.05
        created = False
        while True:
            try:
                [message_id] = calls.publish(
                    topic, [message], timeout=max(1.0, deadline - time.monotonic())
                )
                return message_id
            except google_errors.NotFound as exc:
                if not self.auto_create or created:
                    raise translate(exc, "publish to", topic) from exc
                # Declared once, gone now: the broker lost its state (an emulator restart).
                self.recreate_topic(topic)
                created = True
            except (google_errors.ServiceUnavailable, google_errors.DeadlineExceeded) as exc:
                if time.monotonic() + delay > deadline:
                    raise translate(exc, "publish to", topic) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as exc:
                raise translate(exc, "publish to", topic) from exc
