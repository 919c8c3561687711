"""A Node.js publisher's trace continues into our task.

The Node.js producer of the interop tests publishes a plain message with Google's client's
own OpenTelemetry support on (``enableOpenTelemetryTracing``, the SDK in memory), which
writes the message's ``create`` span into its attributes as ``googclient_traceparent``. Our
traced worker (``vividly-worker service``, ``OTEL_TRACES_EXPORTER``, exporting to a loopback
OTLP/gRPC receiver) receives it on a queue bound to a task: its receive span is the child of
the Node.js span, and the task's run span the child of the receive span, in that one trace.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.apps.worker_tasks import PLAIN_MESSAGES_KEY
from harness.interop import find_node_producer
from harness.otlp_receiver import OtlpReceiver, ReceivedSpan
from harness.required import require_service
from harness.services import free_port
from harness.waiting import wait_for
from harness.workers import WorkerProcess

PREFIX = "vividly-"
TASK = "tests.record_plain_message"


@pytest.fixture(scope="session")
def node_producer() -> Path:
    return require_service(find_node_producer)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.stop()


def node_publish_traced(producer: Path, project: str,
                        messages: list[dict[str, Any]]) -> dict[str, Any]:
    completed = subprocess.run(
        ["node", str(producer)],
        input=json.dumps({"project": project, "opentelemetry": True, "messages": messages}),
        check=False, capture_output=True, text=True, timeout=60, cwd=producer.parent,
    )
    assert completed.returncode == 0, completed.stderr
    output: dict[str, Any] = json.loads(completed.stdout)
    return output


def test_a_nodejs_publishers_trace_continues_into_the_task(
    node_producer: Path, pubsub_project: str, redis_url: str, ledger: redis.Redis,
    receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    monkeypatch.setenv("PORT", str(free_port()))
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS", json.dumps({"partner-events": TASK}))
    for name, value in receiver.environment().items():
        monkeypatch.setenv(name, value)
    worker = start_entrypoint(mode="service").wait_ready()  # declares the subscriptions

    published = node_publish_traced(node_producer, pubsub_project, [
        {"kind": "plain", "topic": f"{PREFIX}partner-events",
         "data": json.dumps({"token": "traced-from-node"}), "attributes": {"source": "node"}},
    ])
    [result] = published["results"]
    [create] = [s for s in published["spans"] if s["name"] == f"{PREFIX}partner-events create"]

    seen = json.loads(wait_for(lambda: ledger.lindex(PLAIN_MESSAGES_KEY, 0), 30,
                               "the plain message's task to run"))
    assert seen["token"] == "traced-from-node"
    # Google's Node.js client wrote its span's context where Google's libraries read it.
    _, trace_id, span_id, _ = seen["attributes"]["googclient_traceparent"].split("-")
    assert (trace_id, span_id) == (create["trace_id"], create["span_id"])

    assert worker.stop() == 0  # SIGTERM: the child's spans are flushed at its shutdown

    def arrived(spans: list[ReceivedSpan]) -> bool:
        return any(s.name == f"run/{TASK}" for s in spans)

    spans = [s for s in receiver.wait_for(arrived, timeout=15) if s.trace_id == trace_id]
    by_name = {s.name: s for s in spans}
    receive = by_name[f"receive {PREFIX}partner-events"]
    run = by_name[f"run/{TASK}"]
    assert receive.parent_id == create["span_id"]
    assert receive.attributes["messaging.message.id"] == result["message_id"]
    assert receive.attributes["messaging.system"] == "gcp_pubsub"
    assert receive.events[-1] == "ack"
    assert run.parent_id == receive.span_id
