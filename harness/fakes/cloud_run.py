"""A Cloud Run Admin API v2 server on loopback for the dispatcher's tests: the real
``google-cloud-run`` clients, their gRPC transports and the library's own message types.

``Executions.ListExecutions`` lists ``executions`` (add running ones per scenario, or let
launches add theirs); ``Jobs.RunJob`` records the request and answers as the API does, with a
long-running operation (not done) whose metadata is the new execution, running all its tasks.
Every call is recorded in ``calls``; failures are scripted with ``fail``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2  # type: ignore[import-untyped]
from google.protobuf import any_pb2

from harness.fakes.loopback_grpc import Failure, LoopbackServer

EXECUTIONS = "google.cloud.run.v2.Executions"
JOBS = "google.cloud.run.v2.Jobs"


class FakeCloudRun(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.executions: list[Any] = []
        #: (method, request) of every call, in order.
        self.calls: list[tuple[str, Any]] = []
        self._numbers = itertools.count(1)
        self._run_failures: list[Failure] = []
        #: While cleared, ``RunJob`` waits (a slow Run API); set by default.
        self.runs_may_answer = threading.Event()
        self.runs_may_answer.set()

    def fail_runs(self, *failures: Failure) -> None:
        """The next ``RunJob`` calls fail with these, in turn (other methods answer)."""
        with self.lock:
            self._run_failures.extend(failures)

    @property
    def run_requests(self) -> list[Any]:
        return [request for method, request in self.calls if method == "RunJob"]

    def add_running(self, job: str, task_count: int, *, succeeded: int = 0) -> Any:
        execution = run_v2.Execution(
            name=f"{job}/executions/running-{next(self._numbers)}", task_count=task_count,
            running_count=task_count - succeeded, succeeded_count=succeeded,
        )
        self.executions.append(execution)
        return execution

    def finish_all(self, at: float = 1.0, *, failed: bool = False) -> None:
        """Every execution completes at ``at`` (``time.time()``), its tasks all succeeded
        (or, with ``failed``, all failed)."""
        seconds, fraction = divmod(at, 1.0)
        with self.lock:
            for execution in self.executions:
                if execution.completion_time:
                    continue
                execution.completion_time = {"seconds": int(seconds),
                                             "nanos": int(fraction * 1e9)}
                if failed:
                    execution.failed_count = execution.task_count
                else:
                    execution.succeeded_count = execution.task_count
                execution.running_count = 0

    def start_server(self) -> str:
        return self.start([
            grpc.method_handlers_generic_handler(EXECUTIONS, {
                "ListExecutions": grpc.unary_unary_rpc_method_handler(
                    self._list_executions,
                    request_deserializer=run_v2.ListExecutionsRequest.deserialize,
                    response_serializer=run_v2.ListExecutionsResponse.serialize,
                ),
            }),
            grpc.method_handlers_generic_handler(JOBS, {
                "RunJob": grpc.unary_unary_rpc_method_handler(
                    self._run_job,
                    request_deserializer=run_v2.RunJobRequest.deserialize,
                    response_serializer=operations_pb2.Operation.SerializeToString,
                ),
            }),
        ])

    def _list_executions(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.calls.append(("ListExecutions", request))
        self.failure_for_call(context)
        with self.lock:
            listed = [e for e in self.executions if e.name.startswith(request.parent + "/")]
        return run_v2.ListExecutionsResponse(executions=listed)

    def _run_job(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.calls.append(("RunJob", request))
            failure = self._run_failures.pop(0) if self._run_failures else None
        if failure is not None:
            context.abort(failure.code, failure.message)
        self.failure_for_call(context)
        self.runs_may_answer.wait(timeout=30)
        task_count = request.overrides.task_count or 1
        execution = run_v2.Execution(
            name=f"{request.name}/executions/launched-{next(self._numbers)}",
            task_count=task_count, running_count=task_count,
        )
        with self.lock:
            self.executions.append(execution)
        metadata = any_pb2.Any()
        metadata.Pack(run_v2.Execution.pb(execution))
        return operations_pb2.Operation(name=f"{execution.name}/operation", done=False,
                                        metadata=metadata)


@contextmanager
def running() -> Iterator[FakeCloudRun]:
    server = FakeCloudRun()
    server.start_server()
    try:
        yield server
    finally:
        server.stop()
