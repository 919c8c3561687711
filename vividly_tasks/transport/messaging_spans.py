"""The transport's spans, after OpenTelemetry's messaging semantic conventions (``gcp_pubsub``).

Imported only by ``tracing.instrument()``: the transport without tracing never loads it.

Publishing: a ``publish {topic}`` span (kind PRODUCER) per confirmed publish, from the call
until Pub/Sub answered with the message id; with pipelined publishing (``publish_in_flight``)
a ``create {topic}`` span per message, from the call until its batch is confirmed, and a
``publish {topic}`` span (kind CLIENT) per Publish request, linked to the messages it carries
(``messaging.batch.message_count``). The span's context travels with the message: in its
Pub/Sub attributes as ``googclient_traceparent`` (W3C trace context under the prefix that
Google's client libraries read and write), and in its Kombu headers (``traceparent``, with
the process's propagator: where Celery's instrumentation reads it).

Receiving: a ``receive {subscription}`` span (kind CONSUMER) per leased message, from its
receipt to its settlement, the child of the producer's span (read from
``googclient_traceparent``, else a W3C ``traceparent`` attribute of a plain message from
another system, else the Kombu headers). Its settlement and lease extensions are events
(``ack``, ``nack``, ``dead letter``, ``renew``, ``modack``, ``lease expired``), and the message
handed to the consumer carries the receive span's context in its headers, so the task's own
span is its child. A message refused unread (poison) gets a receive span with a
``dead letter`` event and an error status.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from vividly_tasks.transport.naming import short_name

INSTRUMENTATION_NAME = "vividly_tasks.transport"
SYSTEM = "gcp_pubsub"
#: The prefix under which Google's Pub/Sub client libraries carry trace context.
GOOGLE_PREFIX = "googclient_"
GOOGLE_TRACEPARENT = GOOGLE_PREFIX + "traceparent"

# Attribute names of the messaging semantic conventions (and Google's own for Pub/Sub).
SYSTEM_KEY = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
SUBSCRIPTION = "messaging.destination.subscription.name"
MESSAGE_ID = "messaging.message.id"
BODY_SIZE = "messaging.message.body.size"
BATCH_COUNT = "messaging.batch.message_count"
DELIVERY_ATTEMPT = "messaging.gcp_pubsub.message.delivery_attempt"
ACK_DEADLINE = "messaging.gcp_pubsub.message.ack_deadline"
PROJECT = "gcp.project_id"
TASK_NAME = "celery.task_name"
DEAD_LETTER_REASON = "messaging.gcp_pubsub.dead_letter_reason"


class _PrefixedAttributes(Getter[Mapping[str, str]], Setter[dict[str, str]]):
    """Pub/Sub attributes as a carrier: ``googclient_<key>`` (or ``<key>`` with no prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(self.prefix + key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [k[len(self.prefix):] for k in carrier if k.startswith(self.prefix)]

    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[self.prefix + key] = value


_GOOGLE_ATTRIBUTES = _PrefixedAttributes(GOOGLE_PREFIX)
_PLAIN_ATTRIBUTES = _PrefixedAttributes("")


def _project(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if len(parts) > 1 and parts[0] == "projects" else None


class MessagingSpans:
    """Starts, annotates and ends the transport's spans (thread-safe: spans are)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        self.w3c = TraceContextTextMapPropagator()

    # --- publishing ------------------------------------------------------------------------
    def start_publish(self, headers: dict[str, Any], *, pipelined: bool) -> Span:
        """A message's producer span, the current span its parent; its context is written to
        ``headers`` now (before they are encoded), to the attributes by ``prepared``."""
        operation = "create" if pipelined else "publish"
        span = self.tracer.start_span(operation, kind=SpanKind.PRODUCER, attributes={
            SYSTEM_KEY: SYSTEM, OPERATION_NAME: operation,
            OPERATION_TYPE: "create" if pipelined else "send",
        })
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return span

    def prepared(self, span: Span, topic: str, message: Any, *, pipelined: bool) -> None:
        """The message is built for ``topic``: name the span, write its context into the
        message's attributes as Google's libraries do."""
        topic_id = short_name(topic)
        span.update_name(f"{'create' if pipelined else 'publish'} {topic_id}")
        attributes = message.attributes
        span.set_attributes({DESTINATION: topic_id, BODY_SIZE: len(message.data)})
        if project := _project(topic):
            span.set_attribute(PROJECT, project)
        if task := attributes.get("task"):
            span.set_attribute(TASK_NAME, task)
        carrier: dict[str, str] = {}
        self.w3c.inject(carrier, context=trace.set_span_in_context(span), setter=_GOOGLE_ATTRIBUTES)
        for key, value in carrier.items():
            attributes[key] = value

    @staticmethod
    def confirmed(span: Span, message_id: str | None) -> None:
        if message_id:
            span.set_attribute(MESSAGE_ID, message_id)
        span.end()

    @staticmethod
    def failed(span: Span, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)[:300]))
        span.end()

    @contextlib.contextmanager
    def batch(self, topic: str, spans: Sequence[Span]) -> Iterator[Span]:
        """The span of one Publish request of pipelined messages, linked to theirs (the child
        of the one message's span when it carries one, else a root)."""
        topic_id = short_name(topic)
        parent = trace.set_span_in_context(spans[0]) if len(spans) == 1 else Context()
        links = [Link(s.get_span_context()) for s in spans if s.get_span_context().is_valid]
        attributes: dict[str, Any] = {
            SYSTEM_KEY: SYSTEM, OPERATION_NAME: "publish", OPERATION_TYPE: "send",
            DESTINATION: topic_id, BATCH_COUNT: len(spans),
        }
        if project := _project(topic):
            attributes[PROJECT] = project
        with self.tracer.start_as_current_span(
            f"publish {topic_id}", context=parent, kind=SpanKind.CLIENT, links=links,
            attributes=attributes,
        ) as span:
            yield span

    # --- receiving -------------------------------------------------------------------------
    def parent_of(self, attributes: Mapping[str, str], headers: Mapping[str, Any]) -> Context:
        """The producer's context: Google's attribute, a W3C attribute, else the headers."""
        if GOOGLE_TRACEPARENT in attributes:
            return self.w3c.extract(attributes, getter=_GOOGLE_ATTRIBUTES)
        if "traceparent" in attributes:
            return self.w3c.extract(attributes, getter=_PLAIN_ATTRIBUTES)
        return propagate.extract(headers)

    def start_receive(
        self, subscription: str, topic: str, received: Any, payload: dict[str, Any],
        attempt: int,
    ) -> Span:
        """The span of a leased message until it is settled; the payload's headers get its
        context, for the consumer's own span."""
        message = received.message
        attributes = message.attributes
        headers = payload["headers"]
        parent = self.parent_of(attributes, headers)
        span = self.tracer.start_span(
            f"receive {short_name(subscription)}", context=parent, kind=SpanKind.CONSUMER,
            attributes=self._receive_attributes(subscription, topic, message, attempt),
        )
        propagate.inject(headers, context=trace.set_span_in_context(span, parent))
        return span

    def refused(self, subscription: str, topic: str, received: Any, reason: str) -> None:
        """A message settled unread (dead-lettered or dropped): a receive span that says so."""
        message = received.message
        attempt = int(received.delivery_attempt or 0) or 1
        span = self.tracer.start_span(
            f"receive {short_name(subscription)}",
            context=self.parent_of(message.attributes, {}), kind=SpanKind.CONSUMER,
            attributes=self._receive_attributes(subscription, topic, message, attempt),
        )
        span.add_event("dead letter", {DEAD_LETTER_REASON: reason[:300]})
        span.set_status(Status(StatusCode.ERROR, reason[:300]))
        span.end()

    @staticmethod
    def _receive_attributes(subscription: str, topic: str, message: Any,
                            attempt: int) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            SYSTEM_KEY: SYSTEM, OPERATION_NAME: "receive", OPERATION_TYPE: "receive",
            SUBSCRIPTION: short_name(subscription), DESTINATION: short_name(topic),
            MESSAGE_ID: message.message_id, BODY_SIZE: len(message.data),
            DELIVERY_ATTEMPT: attempt,
        }
        if project := _project(subscription):
            attributes[PROJECT] = project
        if task := message.attributes.get("task"):
            attributes[TASK_NAME] = task
        return attributes

    @staticmethod
    def extended(span: Span, seconds: int) -> None:
        span.add_event("modack", {ACK_DEADLINE: seconds})

    @staticmethod
    def settled(span: Span, outcome: str, *, deadline_seconds: int | None = None,
                reason: str | None = None) -> None:
        """End a receive span with its settlement: ``ack``, ``nack``, ``dead letter``,
        ``renew`` or ``lease expired`` (the last two an error)."""
        attributes: dict[str, Any] = {}
        if deadline_seconds is not None:
            attributes[ACK_DEADLINE] = deadline_seconds
        if reason is not None:
            attributes[DEAD_LETTER_REASON] = reason[:300]
        span.add_event(outcome, attributes)
        if outcome in ("dead letter", "lease expired"):
            span.set_status(Status(StatusCode.ERROR, reason[:300] if reason else outcome))
        span.end()
