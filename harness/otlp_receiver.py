"""A loopback OTLP/gRPC trace receiver built from OpenTelemetry's own proto types: what the
real OTLP exporter of a worker, a child or a CLI process sends, recorded for the tests (as
HOUSE_STYLE.md says for hosted APIs: the client's code path stays the library's)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from harness.waiting import wait_for

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    links: tuple[str, ...] = ()  # span ids
    status_code: int = 0


class OtlpReceiver:
    """``TraceService/Export`` on 127.0.0.1 (``endpoint``); ``spans()`` holds what arrived."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.requests = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export,
                request_deserializer=ExportTraceServiceRequest.FromString,
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            ),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What makes a process export here through the SDK's OTLP/gRPC exporter."""
        return {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }

    def stop(self) -> None:
        self.server.stop(grace=None)

    def _export(self, request: ExportTraceServiceRequest, context: Any) -> Any:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), kind=span.kind,
                        service=str(resource.get("service.name", "")),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        events=tuple(e.name for e in span.events),
                        links=tuple(link.span_id.hex() for link in span.links),
                        status_code=span.status.code,
                    ))
        with self._lock:
            self._spans.extend(received)
            self.requests += 1
        return ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool],
                 timeout: float) -> list[ReceivedSpan]:
        """The spans once ``predicate`` holds for them, or those that came within ``timeout``
        (the caller's assertions then say what is missing)."""
        try:
            return wait_for(lambda: (spans,) if predicate(spans := self.spans()) else None,
                            timeout, "the spans", interval=0.1)[0]
        except AssertionError:
            return self.spans()


def main() -> None:
    """``python -m harness.otlp_receiver``: serve until SIGTERM, printing the port first (the
    transport benchmark's ``--tracing`` exports here, from a process of its own)."""
    import signal
    import sys
    from collections import Counter

    receiver = OtlpReceiver()
    print(receiver.port, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    receiver.stop()
    names = Counter(span.name for span in receiver.spans())
    print(f"{sum(names.values())} spans in {receiver.requests} requests: "
          + ", ".join(f"{name} {count}" for name, count in names.most_common()), file=sys.stderr)


if __name__ == "__main__":
    main()
