"""Bench only: record every gRPC call this process makes, when ``VIVIDLY_CALL_LOG`` is set.

bench/cloud_distance.py puts this directory first on ``PYTHONPATH`` of the processes whose
Pub/Sub calls it counts (a worker, a CLI) and names a file in ``VIVIDLY_CALL_LOG``: every
channel made by ``grpc.insecure_channel`` / ``grpc.secure_channel`` is wrapped in an
interceptor that appends one line per call, ``pid method start end`` (wall-clock seconds),
when the call ends. The product never imports this module; without the variable it does
nothing. bench/call_count.py reads the lines.
"""

from __future__ import annotations

import os
import time
from typing import Any

VARIABLE = "VIVIDLY_CALL_LOG"


def _install(path: str) -> None:
    import grpc  # noqa: PLC0415 - only in a process that records

    state: dict[str, int] = {}

    def write(method: str, started: float) -> None:
        pid = os.getpid()
        if state.get("pid") != pid:  # a forked child appends through its own descriptor
            state["pid"] = pid
            state["fd"] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        line = f"{pid} {method} {started:.6f} {time.time():.6f}\n"
        os.write(state["fd"], line.encode())  # one short write: appends never interleave

    def recorded(continuation: Any, details: Any, request: Any) -> Any:
        started = time.time()
        outcome = continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) \
            else str(details.method)
        outcome.add_done_callback(lambda _: write(method, started))
        return outcome

    class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return recorded(continuation, details, request)

        def intercept_unary_stream(self, continuation: Any, details: Any,
                                   request: Any) -> Any:
            return recorded(continuation, details, request)

        def intercept_stream_unary(self, continuation: Any, details: Any,
                                   requests: Any) -> Any:
            return recorded(continuation, details, requests)

        def intercept_stream_stream(self, continuation: Any, details: Any,
                                    requests: Any) -> Any:
            return recorded(continuation, details, requests)

    def wrapped(make: Any) -> Any:
        def channel(*args: Any, **kwargs: Any) -> Any:
            return grpc.intercept_channel(make(*args, **kwargs), Recorder())
        return channel

    grpc.insecure_channel = wrapped(grpc.insecure_channel)
    grpc.secure_channel = wrapped(grpc.secure_channel)


if os.environ.get(VARIABLE):
    _install(os.environ[VARIABLE])
