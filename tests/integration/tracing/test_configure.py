"""The tracing piece's set-up: when the environment asks for it,
which exporters it builds, a prefork child's own provider, the missing extra named, and the
app's stage spans."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from harness.workers import REPO_ROOT
from vividly_tasks import spans
from vividly_tasks.worker import tracing
from vividly_tasks.worker.otel_sdk import exporters_from_environment


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "gcp_trace"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_tracing_is_on_when_the_standard_variable_names_an_exporter(
    environ: dict[str, str], expected: bool,
) -> None:
    assert tracing.requested(environ) is expected


def test_exporters_are_found_by_the_sdks_entry_points() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    assert exporters_from_environment({}) == [OTLPSpanExporter]
    assert exporters_from_environment({"OTEL_TRACES_EXPORTER": "otlp,console"}) == [
        OTLPSpanExporter, ConsoleSpanExporter]
    assert exporters_from_environment({"OTEL_TRACES_EXPORTER": "none"}) == []
    with pytest.raises(ImportError, match="'no_such_exporter', which no installed package"):
        exporters_from_environment({"OTEL_TRACES_EXPORTER": "no_such_exporter"})


def run_python(script: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return parsed


def test_a_forked_child_records_to_a_provider_and_exporter_of_its_own() -> None:
    """What a prefork child inherits is its parent's; it must build its own (gRPC channels
    and export threads do not survive fork())."""
    outcome = run_python("""
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from vividly_tasks.worker import tracing
made = []
def exporter():
    made.append(InMemorySpanExporter())
    return made[-1]
provider = tracing.configure(exporters=[exporter], instrument_celery=False)
tracer = trace.get_tracer("t")  # taken before the fork, as Celery's instrumentation does
tracer.start_span("parent").end()
parent_sdk = provider.for_this_process()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    tracer.start_span("child").end()
    provider.shutdown_this_process()  # what worker_process_shutdown does
    report = {"own": provider.for_this_process() is not parent_sdk, "exporters": len(made),
              "child_spans": [s.name for s in made[-1].get_finished_spans()]}
    os.write(write, json.dumps(report).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(read, 10000))
provider.force_flush()
print(json.dumps({**child, "parent_spans": [s.name for s in made[0].get_finished_spans()]}))
""")
    assert outcome == {"own": True, "exporters": 2, "child_spans": ["child"],
                       "parent_spans": ["parent"]}


def test_a_missing_extra_is_an_import_error_naming_it() -> None:
    outcome = run_python("""
import importlib.abc, json, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("opentelemetry.instrumentation.celery"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from vividly_tasks.worker import tracing
try:
    tracing.configure(exporters=[])
except ImportError as exc:
    print(json.dumps({"error": str(exc)}))
""")
    assert "pip install 'vividly-tasks[tracing]'" in str(outcome["error"])


@pytest.fixture
def stage_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans.enable(provider, project="p")
    try:
        yield exporter
    finally:
        spans.disable()


def test_stages_are_sibling_spans_with_the_models_usage(
    stage_spans: InMemorySpanExporter,
) -> None:
    @spans.staged
    def pipeline(fail: bool) -> None:
        spans.stage("generate", **{"vividly.stage": "script"})
        spans.add_usage(model="gemini-x", prompt_tokens=10, output_tokens=20)
        spans.add_usage(model="gemini-x", prompt_tokens=1, output_tokens=2)
        spans.stage("store")
        if fail:
            raise RuntimeError("disk full")

    with spans.span("run"):
        pipeline(False)
        with pytest.raises(RuntimeError):
            pipeline(True)
    finished = stage_spans.get_finished_spans()
    run = next(s for s in finished if s.name == "run")
    generate, store, generate_again, failed = [s for s in finished if s.name != "run"]
    assert [s.name for s in (generate, store, generate_again, failed)] == [
        "generate", "store", "generate", "store"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id
               for s in (generate, store, failed))
    assert dict(generate.attributes or {}) == {
        "vividly.stage": "script", "gen_ai.request.model": "gemini-x",
        "gen_ai.usage.input_tokens": 11, "gen_ai.usage.output_tokens": 22,
        "vividly.model_calls": 2,
    }
    assert failed.status.status_code is StatusCode.ERROR
    assert store.status.status_code is StatusCode.UNSET


def test_log_fields_name_the_current_span(stage_spans: InMemorySpanExporter) -> None:
    assert spans.trace_log_fields() is None  # no span active
    with spans.span("work"):
        fields = spans.trace_log_fields()
    [work] = stage_spans.get_finished_spans()
    assert fields == {
        "logging.googleapis.com/trace": f"projects/p/traces/{work.context.trace_id:032x}",
        "logging.googleapis.com/spanId": f"{work.context.span_id:016x}",
        "logging.googleapis.com/trace_sampled": True,
    }


def test_everything_is_a_no_op_while_tracing_is_off() -> None:
    assert not spans.is_enabled()

    @spans.staged
    def pipeline() -> int:
        spans.stage("generate")
        spans.add_usage(model="m", prompt_tokens=1, output_tokens=1)
        spans.annotate(x=1)
        return 7

    with spans.span("nothing"):
        assert pipeline() == 7
    assert spans.trace_log_fields() is None
