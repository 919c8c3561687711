"""Opt-in OpenTelemetry spans of the transport: off unless ``instrument()`` is called.

Off, the transport imports nothing of OpenTelemetry and each publish, receipt and settle
costs one check (``hooks is None``). On (``instrument``; ``vividly_tasks.worker.tracing``
calls it), ``messaging_spans.py`` records spans after OpenTelemetry's messaging semantic
conventions for ``gcp_pubsub`` and carries the trace context on each message, both in the
Pub/Sub attributes as Google's client libraries do (``googclient_traceparent``) and in the
Kombu headers (``traceparent``, where Celery's instrumentation reads it).

Like an OpenTelemetry instrumentor it is process-wide, as the tracer provider it records to:
``uninstrument()`` switches it off again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vividly_tasks.transport.messaging_spans import MessagingSpans

#: The spans of this process's transport, or None: tracing is off (the call sites check it).
hooks: MessagingSpans | None = None


def instrument(tracer_provider: Any = None) -> None:
    """Record the transport's spans with ``tracer_provider`` (the global one if None)."""
    global hooks  # noqa: PLW0603 - the one switch the call sites read
    from vividly_tasks.transport.messaging_spans import MessagingSpans  # noqa: PLC0415

    hooks = MessagingSpans(tracer_provider)


def uninstrument() -> None:
    """Stop recording spans; messages published from now on carry no trace context."""
    global hooks  # noqa: PLW0603
    hooks = None


def is_instrumented() -> bool:
    return hooks is not None
