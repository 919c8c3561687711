"""The OpenTelemetry SDK set up for a prefork worker (imported by ``tracing.configure`` only,
once it checked that the ``tracing`` extra is installed).

A prefork child must not export through its parent's exporter: a gRPC channel, its threads
and its queue do not survive ``fork()``. ``ProcessTracerProvider`` is the one tracer
provider of the process (set once, globally, as OpenTelemetry allows): each process that
records a span builds its own SDK provider on first use, with its own exporters, so tracers
taken before the fork (Celery's instrumentation, the transport's) record, in a child, to the
child's. A child's provider is flushed and shut down at ``worker_process_shutdown`` (which
runs at every stop, ``child_shutdown.py``); the others at interpreter exit, by the SDK.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

logger = logging.getLogger(__name__)

ExporterFactory = Callable[[], SpanExporter]
#: How the ``otlp`` exporter name maps onto the entry points of OpenTelemetry's packages.
OTLP_ENTRY_POINTS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
EXPORTER_GROUP = "opentelemetry_traces_exporter"


def exporters_from_environment(environ: dict[str, str] | None = None) -> list[ExporterFactory]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (comma-separated; ``otlp`` by default, over
    gRPC unless ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` says ``http/protobuf``), as the SDK's
    own auto-configuration reads it: any package's ``opentelemetry_traces_exporter`` entry
    point, so ``gcp_trace`` (opentelemetry-exporter-gcp-trace) and ``console`` work too."""
    env = os.environ if environ is None else environ
    factories: list[ExporterFactory] = []
    for given in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = given.strip()
        if name in ("", "none"):
            continue
        if name == "otlp":
            protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
            name = OTLP_ENTRY_POINTS.get(protocol, "otlp_proto_grpc")
        found = list(entry_points(group=EXPORTER_GROUP, name=name))
        if not found:
            raise ImportError(
                f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides "
                f"(an '{EXPORTER_GROUP}' entry point: the OTLP exporters come with the "
                "'tracing' extra; Cloud Trace's is opentelemetry-exporter-gcp-trace)"
            )
        factories.append(found[0].load())
    return factories


class ProcessTracerProvider(trace.TracerProvider):
    """One SDK ``TracerProvider`` per process, built on first use (see the module docstring)."""

    def __init__(self, exporters: Sequence[ExporterFactory], resource: Resource) -> None:
        self.exporters = list(exporters)
        self.resource = resource
        self._sdk: TracerProvider | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def for_this_process(self) -> TracerProvider:
        """This process's SDK provider (a child builds its own, never its parent's)."""
        sdk, pid = self._sdk, os.getpid()
        if sdk is not None and self._pid == pid:
            return sdk
        with self._lock:
            if self._sdk is None or self._pid != pid:
                sdk = TracerProvider(resource=self.resource)
                for factory in self.exporters:
                    sdk.add_span_processor(BatchSpanProcessor(factory()))
                self._sdk, self._pid = sdk, pid
            return self._sdk

    def get_tracer(self, instrumenting_module_name: str,
                   instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace.Tracer:
        return _ProcessTracer(self, (instrumenting_module_name, instrumenting_library_version,
                                     schema_url, attributes))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what this process recorded (a no-op where it recorded nothing)."""
        if self._sdk is None or self._pid != os.getpid():
            return True
        return self._sdk.force_flush(timeout_millis)

    def shutdown_this_process(self) -> None:
        """Flush and close this process's exporters (a prefork child's, at its exit)."""
        if self._sdk is not None and self._pid == os.getpid():
            self._sdk.shutdown()


class _ProcessTracer(trace.Tracer):
    """A tracer that records to the current process's SDK provider."""

    def __init__(self, provider: ProcessTracerProvider, key: tuple[Any, ...]) -> None:
        self._provider = provider
        self._key = key
        self._tracer: trace.Tracer | None = None
        self._sdk: TracerProvider | None = None

    def _current(self) -> trace.Tracer:
        sdk = self._provider.for_this_process()
        if self._sdk is not sdk or self._tracer is None:
            name, version, schema_url, attributes = self._key
            self._tracer = sdk.get_tracer(name, version, schema_url, attributes)
            self._sdk = sdk
        return self._tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().start_as_current_span(*args, **kwargs)
