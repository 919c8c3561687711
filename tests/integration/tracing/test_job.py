"""One trace from ``vividly submit`` to the finished video lesson.

Every process exports through the SDK's real OTLP/gRPC exporter to a loopback receiver built
from OpenTelemetry's proto types (harness/otlp_receiver.py): the ``vividly submit`` CLI, the
``vividly-worker job --idle-timeout 1`` that drains the request, and its prefork child, whose
spans reach the receiver only because its ``worker_process_shutdown`` flush runs at the
job's idle exit. Tracing is switched on the way a deployment does, by ``OTEL_TRACES_EXPORTER``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.otlp_receiver import OtlpReceiver, ReceivedSpan
from harness.workers import REPO_ROOT, WorkerProcess

STAGES = ["generate", "narrate", "render", "encode", "store"]
TASK = "vividly.generate_content"
SPAN_KIND_CONSUMER = 5
SPAN_KIND_PRODUCER = 4


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.stop()


@pytest.fixture
def traced_env(pubsub_project: str, receiver: OtlpReceiver, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'content.sqlite'}")
    monkeypatch.setenv("CONTENT_TTS_WORDS_PER_MINUTE", "300")  # a short video
    for name, value in receiver.environment().items():
        monkeypatch.setenv(name, value)
    return dict(os.environ)


def one_trace(spans: list[ReceivedSpan], root: ReceivedSpan) -> dict[str, ReceivedSpan]:
    """The spans of ``root``'s trace by name (each name once)."""
    mine = [s for s in spans if s.trace_id == root.trace_id]
    by_name = {s.name: s for s in mine}
    assert len(by_name) == len(mine), sorted(s.name for s in mine)
    return by_name


def test_a_submitted_video_lesson_is_one_trace_from_submit_to_every_stage(
    traced_env: dict[str, str], receiver: OtlpReceiver, tmp_path: Path,
) -> None:
    submitted = subprocess.run(
        [str(Path(sys.executable).with_name("vividly")), "submit", "--topic", "Tides",
         "--modality", "video", "--grade", "5"],
        check=False, env=traced_env, cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )
    assert submitted.returncode == 0, submitted.stderr
    request_id = submitted.stdout.strip()

    job = WorkerProcess.entrypoint(traced_env, tmp_path / "job.log",
                                   extra_args=["--idle-timeout", "1"]).start()
    try:
        assert job.wait(120) == 0, job.logs()[-4000:]
    finally:
        job.stop()
    summary = job.summary()
    assert (summary["exit_reason"], summary["succeeded"]) == ("idle", 1), summary

    def complete(spans: list[ReceivedSpan]) -> bool:
        names = {s.name for s in spans}
        return {"submit", f"run/{TASK}", "store"} <= names and any(
            n.startswith("receive ") for n in names)

    spans = receiver.wait_for(complete, timeout=15)
    [submit] = [s for s in spans if s.name == "submit"]
    trace = one_trace(spans, submit)
    topic = subscription = "vividly-vividly"
    publish = trace[f"publish {topic}"]
    receive = trace[f"receive {subscription}"]
    apply_async = trace[f"apply_async/{TASK}"]
    run = trace[f"run/{TASK}"]

    # submit -> apply_async -> publish -> receive -> run -> each stage
    assert submit.parent_id == ""
    assert apply_async.parent_id == submit.span_id
    assert publish.parent_id == apply_async.span_id
    assert receive.parent_id == publish.span_id
    assert run.parent_id == receive.span_id
    for stage in STAGES:
        assert trace[stage].parent_id == run.span_id, stage
        assert trace[stage].attributes["vividly.request_id"] == request_id

    assert submit.attributes["vividly.request_id"] == request_id
    assert publish.kind == SPAN_KIND_PRODUCER
    assert receive.kind == SPAN_KIND_CONSUMER
    assert publish.attributes["messaging.system"] == "gcp_pubsub"
    assert receive.attributes["messaging.message.id"] == publish.attributes["messaging.message.id"]
    assert receive.attributes["messaging.gcp_pubsub.message.delivery_attempt"] == 1
    assert receive.events[-1] == "ack"
    assert trace["generate"].attributes["vividly.generator"]
    assert {submit.service, run.service} == {"vividly_tasks"}

    # The task's log lines name its trace and span, as Cloud Logging reads them.
    [done] = [r for r in job.json_records()
              if "delivery completed" in str(r.get("message")) and r.get("task_id")]
    assert done["logging.googleapis.com/trace"] == \
        f"projects/{traced_env['BROKER_URL'].removeprefix('pubsub://')}/traces/{run.trace_id}"
    assert done["logging.googleapis.com/spanId"] == run.span_id
    assert done["logging.googleapis.com/trace_sampled"] is True
