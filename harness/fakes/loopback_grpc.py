"""What the loopback gRPC fakes share: a server on 127.0.0.1 that stops with its context,
and scripted failures (a status code and message answered in turn)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Failure:
    """One scripted failure: the call ends with ``code`` and ``message``; ``retry_after``
    adds a google.rpc.RetryInfo to the status, as Google's rate limits do."""

    code: grpc.StatusCode
    message: str
    retry_after: float | None = None


class LoopbackServer:
    """A gRPC server on an ephemeral loopback port, answering ``handlers``; failures scripted
    with ``fail`` are answered first, one per call, by any method."""

    def __init__(self) -> None:
        self._failures: list[Failure] = []
        self._failures_at: dict[int, Failure] = {}
        self._calls = 0
        self.lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.endpoint = ""

    def fail(self, *failures: Failure) -> None:
        with self.lock:
            self._failures.extend(failures)

    def fail_at(self, call: int, failure: Failure) -> None:
        """Answer the ``call``-th call (counting from 1, every method) with ``failure``."""
        with self.lock:
            self._failures_at[call] = failure

    def failure_for_call(self, context: grpc.ServicerContext) -> None:
        """Abort the call if a failure is scripted."""
        with self.lock:
            self._calls += 1
            failure = self._failures_at.pop(self._calls, None)
            if failure is None and self._failures:
                failure = self._failures.pop(0)
        if failure is not None:
            abort(context, failure)

    def start(self, handlers: list[Any]) -> str:
        self._server = grpc.server(ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers(tuple(handlers))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None


def abort(context: grpc.ServicerContext, failure: Failure) -> None:
    """End the call with ``failure`` (and its RetryInfo, if it has one)."""
    if failure.retry_after is None:
        context.abort(failure.code, failure.message)
        return
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(failure.retry_after))
    ))
    status = status_pb2.Status(
        code=getattr(code_pb2, failure.code.name), message=failure.message, details=[packed]
    )
    context.abort_with_status(rpc_status.to_status(status))

