"""The transport's spans, against the Pub/Sub emulator, in this process:
messaging semantic conventions for gcp_pubsub, trace context in ``googclient_traceparent``
and in the headers, plain messages from other systems continued, and nothing of
OpenTelemetry loaded while tracing is off."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from harness.pubsub_helpers import publish_raw
from harness.workers import REPO_ROOT
from vividly_tasks.transport import register, tracing
from vividly_tasks.transport.clients import clients_for_this_process
from vividly_tasks.transport.naming import resource_id, subscription_path
from vividly_tasks.transport.stubs import PullRequest

PREFIX = "tt-"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The transport traced into an in-memory exporter, for this test only."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.instrument(provider)
    try:
        yield spans
    finally:
        tracing.uninstrument()
        provider.shutdown()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests")


def connection(project: str, **options: Any) -> Connection:
    register()
    return Connection(f"pubsub://{project}", transport_options={"prefix": PREFIX, **options})


def named(spans: list[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def wait_spans(exporter: InMemorySpanExporter, prefix: str, count: int = 1,
               timeout: float = 10) -> list[ReadableSpan]:
    deadline = time.monotonic() + timeout
    while len(found := named(list(exporter.get_finished_spans()), prefix)) < count:
        assert time.monotonic() < deadline, [s.name for s in exporter.get_finished_spans()]
        time.sleep(0.05)
    return found


def traceparent_of(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` of ``span``, less its flags."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}"


def without_flags(traceparent: str) -> str:
    return traceparent.rsplit("-", 1)[0]


def test_publish_and_receive_spans_follow_the_conventions_and_carry_the_context(
    pubsub_project: str, exporter: InMemorySpanExporter, tracer: trace.Tracer,
) -> None:
    with connection(pubsub_project) as conn:
        queue = conn.SimpleQueue("traced")
        with tracer.start_as_current_span("caller") as caller:
            queue.put({"lesson": "fractions"}, headers={"task": "t.lesson"})
        message = queue.get(timeout=10)
        message.ack()
        queue.close()

    [publish] = wait_spans(exporter, "publish ")
    assert publish.name == f"publish {PREFIX}traced"
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == caller.get_span_context().span_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.system"] == "gcp_pubsub"
    assert publish.attributes["messaging.operation.type"] == "send"
    assert publish.attributes["messaging.destination.name"] == f"{PREFIX}traced"
    assert publish.attributes["gcp.project_id"] == pubsub_project
    assert publish.attributes["messaging.message.id"] == \
        message.delivery_info["pubsub_message_id"]

    [receive] = wait_spans(exporter, "receive ")
    assert receive.name == f"receive {PREFIX}traced"
    assert receive.kind is SpanKind.CONSUMER
    assert receive.parent is not None and receive.parent.span_id == publish.context.span_id
    assert receive.context.trace_id == publish.context.trace_id
    assert receive.attributes is not None
    assert receive.attributes["messaging.message.id"] == \
        message.delivery_info["pubsub_message_id"]
    assert receive.attributes["messaging.gcp_pubsub.message.delivery_attempt"] == 1
    assert receive.attributes["messaging.destination.subscription.name"] == f"{PREFIX}traced"
    assert [event.name for event in receive.events] == ["ack"]
    # The consumer's own span continues from the receive span (Celery's reads the header).
    assert without_flags(message.headers["traceparent"]) == traceparent_of(receive)


def test_the_pubsub_attribute_is_googles_form(
    pubsub_project: str, exporter: InMemorySpanExporter,
) -> None:
    """What a consumer on Google's client library reads: ``googclient_traceparent``."""
    with connection(pubsub_project) as conn:
        queue = conn.SimpleQueue("raw-read")
        queue.put("hello")
        subscription = subscription_path(pubsub_project, resource_id(PREFIX, "raw-read"))
        response = clients_for_this_process().data_plane.pull(
            PullRequest(subscription=subscription, max_messages=1), timeout=10)
        [received] = response.received_messages
        clients_for_this_process().data_plane.acknowledge(subscription, [received.ack_id],
                                                          timeout=10)
        queue.close()
    [publish] = wait_spans(exporter, "publish ")
    attributes = received.message.attributes
    assert without_flags(attributes["googclient_traceparent"]) == traceparent_of(publish)
    envelope = json.loads(received.message.data)
    assert without_flags(envelope["headers"]["traceparent"]) == traceparent_of(publish)


def test_reject_requeue_and_dead_letter_are_events_of_the_receive_span(
    pubsub_project: str, exporter: InMemorySpanExporter,
) -> None:
    with connection(pubsub_project) as conn:
        queue = conn.SimpleQueue("settled")
        queue.put("again")
        queue.get(timeout=10).requeue()
        queue.get(timeout=10).reject()  # the redelivery, to the dead-letter topic
        queue.close()
    first, second = wait_spans(exporter, "receive ", count=2)
    assert [e.name for e in first.events] == ["nack"]
    assert [e.name for e in second.events] == ["dead letter"]
    assert second.attributes is not None
    assert second.attributes["messaging.gcp_pubsub.message.delivery_attempt"] == 2
    assert second.status.status_code is StatusCode.ERROR


def test_lease_extensions_are_events(
    pubsub_project: str, exporter: InMemorySpanExporter,
) -> None:
    with connection(pubsub_project, ack_deadline_seconds=10) as conn:
        queue = conn.SimpleQueue("held")
        queue.put("slow")
        message = queue.get(timeout=10)
        time.sleep(4.5)  # one extension is due every third of the 10 s deadline
        message.ack()
        queue.close()
    [receive] = wait_spans(exporter, "receive ")
    names = [e.name for e in receive.events]
    assert names[-1] == "ack" and "modack" in names, names


def test_pipelined_publishes_have_create_spans_and_a_batch_span(
    pubsub_project: str, exporter: InMemorySpanExporter,
) -> None:
    with connection(pubsub_project, publish_in_flight=10) as conn:
        queue = conn.SimpleQueue("pipelined")
        for number in range(3):
            queue.put(number)
        conn.default_channel.flush_publishes()
        for _ in range(3):
            queue.get(timeout=10).ack()
        queue.close()
    creates = wait_spans(exporter, "create ", count=3)
    batches = wait_spans(exporter, "publish ")
    assert all(s.kind is SpanKind.PRODUCER for s in creates)
    assert all(s.attributes and s.attributes["messaging.message.id"] for s in creates)
    linked = {link.context.span_id for batch in batches for link in batch.links}
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches  # type: ignore[index,misc]
               ) == 3
    carried = {s.context.span_id for s in creates}
    assert carried <= linked | {b.parent.span_id for b in batches if b.parent}
    receives = wait_spans(exporter, "receive ", count=3)
    assert {r.parent.span_id for r in receives if r.parent} == carried


def test_a_plain_message_continues_its_producers_trace(
    pubsub_project: str, exporter: InMemorySpanExporter,
) -> None:
    """Another system's trace (Google's attribute, or a W3C ``traceparent`` attribute)
    continues into the Celery message made of a plain one."""
    options = {"plain_message_tasks": {"partner": "t.partner"}}
    google = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    w3c = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
    with connection(pubsub_project, **options) as conn:
        queue = conn.SimpleQueue("partner")
        publish_raw(pubsub_project, PREFIX, "partner", b'{"n": 1}',
                    googclient_traceparent=google)
        publish_raw(pubsub_project, PREFIX, "partner", b'{"n": 2}', traceparent=w3c)
        messages = [queue.get(timeout=10) for _ in range(2)]
        for message in messages:
            message.ack()
        queue.close()
    receives = wait_spans(exporter, "receive ", count=2)
    by_trace = {f"{r.context.trace_id:032x}": r for r in receives}
    assert set(by_trace) == {"a" * 32, "c" * 32}
    assert by_trace["a" * 32].parent.span_id == int("b" * 16, 16)  # type: ignore[union-attr]
    assert by_trace["c" * 32].parent.span_id == int("d" * 16, 16)  # type: ignore[union-attr]
    for message in messages:
        assert message.headers["traceparent"].split("-")[1] in by_trace


def test_a_poison_message_has_a_failed_receive_span(
    pubsub_project: str, exporter: InMemorySpanExporter,
) -> None:
    with connection(pubsub_project) as conn:
        queue = conn.SimpleQueue("poisoned")
        publish_raw(pubsub_project, PREFIX, "poisoned", b"{not json",
                    googclient_traceparent="00-" + "e" * 32 + "-" + "f" * 16 + "-01")
        with pytest.raises(queue.Empty):
            queue.get(timeout=3)
        queue.close()
    [receive] = wait_spans(exporter, "receive ")
    assert f"{receive.context.trace_id:032x}" == "e" * 32
    assert [e.name for e in receive.events] == ["dead letter"]
    assert receive.status.status_code is StatusCode.ERROR


def test_tracing_off_loads_nothing_of_opentelemetry() -> None:
    """The adapter adds no OpenTelemetry module to what Google's Pub/Sub client loads itself,
    and a traced-off transport's messages carry no trace context."""
    script = """
import json, sys
import google.pubsub_v1
google_loaded = {m for m in sys.modules if m.startswith("opentelemetry")}
import vividly_tasks.transport.transport, vividly_tasks.worker, vividly_tasks.worker.tracing
import vividly_tasks.lessons.product, worker_entry.launcher, vividly_tasks.spans
ours = {m for m in sys.modules if m.startswith("opentelemetry")} - google_loaded
print(json.dumps({"ours": sorted(ours),
                  "spans": "vividly_tasks.transport.messaging_spans" in sys.modules}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True,
                            capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) == {"ours": [], "spans": False}


def test_tracing_off_sends_no_trace_context(pubsub_project: str) -> None:
    assert tracing.hooks is None
    with connection(pubsub_project) as conn:
        queue = conn.SimpleQueue("untraced")
        queue.put("plain")
        message = queue.get(timeout=10)
        message.ack()
        queue.close()
    assert message.headers == {}
