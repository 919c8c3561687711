"""The job's executions through the Cloud Run Admin API v2 (``google-cloud-run``).

``executions`` lists the job's executions: those that have not completed, with their task
counts, and those that have, with their completion time and whether every task succeeded
(the Run API keeps completed executions listed, so a launch it has listed is never guessed
at again); ``launch`` runs the job with ``task_count`` overridden for that execution only (the API's
override; the job's ``--parallelism`` applies, so deploy the job with ``--parallelism=0``,
"as many as the task count" — docs/cloud-run.md). ``run_job`` answers with a long-running
operation whose metadata is the new execution; the dispatcher does not wait for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as api_exceptions

from vividly_tasks.dispatch.google_apis import (
    CALL_TIMEOUT_SECONDS,
    build_client,
    call_with_retries,
)
from vividly_tasks.dispatch.inputs import ExecutionStates, FinishedExecution, RunningExecution

if TYPE_CHECKING:
    run_v2: Any
    JobsGrpcTransport: Any
    ExecutionsGrpcTransport: Any
else:
    from google.cloud import run_v2
    from google.cloud.run_v2.services.executions.transports import ExecutionsGrpcTransport
    from google.cloud.run_v2.services.jobs.transports import JobsGrpcTransport

API = "Cloud Run Admin API (run.googleapis.com)"
LIST_ROLE = "roles/run.viewer on the job"
RUN_ROLE = ("roles/run.developer on the job (run.jobs.run, and run.jobs.runWithOverrides "
            "for the task count)")


def _launch_is_retryable(exc: BaseException) -> bool:
    # Only an unreached server: after a deadline the execution may have started, and a second
    # run_job would start another.
    return isinstance(exc, api_exceptions.ServiceUnavailable)


class CloudRunJob:
    """One Cloud Run job: its running executions, and new ones."""

    def __init__(self, *, project: str, region: str, job: str, endpoint: str | None,
                 attempts: int) -> None:
        self.name = f"projects/{project}/locations/{region}/jobs/{job}"
        self.attempts = attempts
        self.jobs = build_client(run_v2.JobsClient, JobsGrpcTransport, endpoint)
        self.executions_client = build_client(run_v2.ExecutionsClient, ExecutionsGrpcTransport,
                                       endpoint)

    def executions(self) -> ExecutionStates:
        def call() -> list[Any]:
            return list(self.executions_client.list_executions(
                parent=self.name, retry=None, timeout=CALL_TIMEOUT_SECONDS))

        listed = call_with_retries(call, attempts=self.attempts, api=API,
                                   resource=self.name, role=LIST_ROLE)
        running = []
        finished = []
        for execution in listed:
            if execution.completion_time:
                finished.append(FinishedExecution(
                    name=execution.name,
                    finished_at=execution.completion_time.timestamp(),
                    succeeded=execution.succeeded_count == execution.task_count,
                    started_at=(execution.start_time.timestamp() if execution.start_time
                                else None),
                ))
                continue
            running.append(RunningExecution(
                name=execution.name, task_count=execution.task_count,
                active_tasks=max(0, execution.task_count - execution.succeeded_count
                                 - execution.failed_count - execution.cancelled_count),
            ))
        return ExecutionStates(running, finished)

    def launch(self, task_count: int) -> str:
        """Start an execution of ``task_count`` tasks; returns its name."""
        request = run_v2.RunJobRequest(
            name=self.name, overrides=run_v2.RunJobRequest.Overrides(task_count=task_count)
        )

        def call() -> Any:
            return self.jobs.run_job(request=request, retry=None, timeout=CALL_TIMEOUT_SECONDS)

        operation = call_with_retries(call, attempts=self.attempts, api=API,
                                      resource=self.name, role=RUN_ROLE,
                                      retry=_launch_is_retryable)
        execution = operation.metadata
        return str(execution.name) if execution is not None and execution.name \
            else str(operation.operation.name)
