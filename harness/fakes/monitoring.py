"""A Cloud Monitoring server on loopback for the dispatcher's tests: the real
``google-cloud-monitoring`` client, its gRPC transport and the library's own message types.

``ListTimeSeries`` answers the two Pub/Sub subscription metrics the dispatcher reads, from
``undelivered``, ``oldest_age_seconds`` and ``sampled_at`` (set them per scenario; None means
Monitoring has no point), records every request, and can be scripted to fail (``fail``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.cloud import monitoring_v3

from harness.fakes.loopback_grpc import LoopbackServer

SERVICE = "google.monitoring.v3.MetricService"


class FakeMonitoring(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.undelivered: int | None = 0
        self.oldest_age_seconds = 0
        #: End of the points' interval (``time.time()``); None means "a minute ago".
        self.sampled_at: float | None = None
        self.requests: list[Any] = []
        #: Per subscription id, instead of ``undelivered`` (the subscriptions not named here
        #: answer ``undelivered``).
        self.undelivered_by_subscription: dict[str, int] = {}

    def start_server(self) -> str:
        return self.start([grpc.method_handlers_generic_handler(SERVICE, {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                self._list_time_series,
                request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
            ),
        })])

    def _list_time_series(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.requests.append(request)
        self.failure_for_call(context)
        if self.undelivered is None:
            return monitoring_v3.ListTimeSeriesResponse()
        undelivered = next((count for name, count in self.undelivered_by_subscription.items()
                            if f'subscription_id = "{name}"' in request.filter),
                           self.undelivered)
        value = undelivered if "num_undelivered_messages" in request.filter \
            else self.oldest_age_seconds
        end = self.sampled_at if self.sampled_at is not None else time.time() - 60
        point = monitoring_v3.Point(
            interval=monitoring_v3.TimeInterval(end_time={"seconds": int(end)},
                                                start_time={"seconds": int(end)}),
            value=monitoring_v3.TypedValue(int64_value=value),
        )
        return monitoring_v3.ListTimeSeriesResponse(
            time_series=[monitoring_v3.TimeSeries(points=[point])]
        )


@contextmanager
def running() -> Iterator[FakeMonitoring]:
    server = FakeMonitoring()
    server.start_server()
    try:
        yield server
    finally:
        server.stop()
