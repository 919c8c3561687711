"""``vividly dispatch`` against Cloud Monitoring and the Cloud Run Admin API: the real client
libraries, gRPC servers on loopback (harness/fakes/monitoring.py, harness/fakes/cloud_run.py)
scripted per scenario, every call recorded. No network."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from click.testing import CliRunner

from harness.fakes import cloud_run as fake_cloud_run
from harness.fakes import monitoring as fake_monitoring
from harness.fakes.cloud_run import FakeCloudRun
from harness.fakes.loopback_grpc import Failure
from harness.fakes.monitoring import FakeMonitoring
from vividly_tasks.cli import cli
from vividly_tasks.cli.exit_codes import RET_CONFIG, RET_UNAVAILABLE

JOB = "projects/proj/locations/europe-west1/jobs/vividly-job"


@pytest.fixture
def monitoring() -> Iterator[FakeMonitoring]:
    with fake_monitoring.running() as server:
        yield server


@pytest.fixture
def cloud_run() -> Iterator[FakeCloudRun]:
    with fake_cloud_run.running() as server:
        yield server


@pytest.fixture
def env(monitoring: FakeMonitoring, cloud_run: FakeCloudRun) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": "proj", "DISPATCH_REGION": "europe-west1",
        "DISPATCH_MONITORING_ENDPOINT": monitoring.endpoint,
        "DISPATCH_RUN_ENDPOINT": cloud_run.endpoint,
        "DISPATCH_MESSAGES_PER_TASK": "10", "DISPATCH_MAX_TASKS": "25",
    }


def dispatch(env: dict[str, str], *args: str, expect: int = 0) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["dispatch", *args], env=env)
    assert result.exit_code == expect, result.output
    if expect:
        return {"error": result.output}
    return json.loads(result.stdout.strip().splitlines()[-1])


def task_counts(cloud_run: FakeCloudRun) -> list[int]:
    return [request.overrides.task_count for request in cloud_run.run_requests]


def test_an_empty_queue_makes_no_run_call(env: dict[str, str], cloud_run: FakeCloudRun,
                                          monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 0
    decision = dispatch(env)
    assert (decision["action"], decision["reason"]) == ("none", "nothing_waiting")
    assert [method for method, _ in cloud_run.calls] == ["ListExecutions"]
    # Monitoring was asked about the workers' subscription, in the job's project.
    assert 'subscription_id = "vividly-vividly"' in monitoring.requests[0].filter
    assert monitoring.requests[0].name == "projects/proj"
    assert cloud_run.calls[0][1].parent == JOB


def test_one_message_starts_one_execution_of_one_task(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 1
    decision = dispatch(env)
    assert (decision["action"], decision["task_count"]) == ("launch", 1)
    assert task_counts(cloud_run) == [1]
    assert cloud_run.run_requests[0].name == JOB
    assert decision["execution"] == f"{JOB}/executions/launched-1"


def test_a_backlog_of_ten_thousand_gets_the_configured_maximum(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 10_000
    assert dispatch(env)["task_count"] == 25
    assert task_counts(cloud_run) == [25]


def test_a_running_execution_that_covers_the_backlog_means_no_run_call(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    cloud_run.add_running(JOB, task_count=3)
    monitoring.undelivered = 30
    decision = dispatch(env)
    assert decision["reason"] == "covered_by_running_executions"
    assert cloud_run.run_requests == []


def test_a_metric_that_still_shows_the_backlog_after_a_launch_starts_no_second_one(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 1
    assert dispatch(env)["action"] == "launch"
    cloud_run.finish_all()  # done in seconds; Monitoring still shows the message
    window_over = {**env, "DISPATCH_DECISION_WINDOW_SECONDS": "0.001"}
    for _ in range(3):
        monitoring.sampled_at = time.time()  # sampled after the launch, not yet settled
        decision = dispatch(window_over)
        assert (decision["action"], decision["basis"]) == ("none", "arrivals")
    assert task_counts(cloud_run) == [1]


def test_dry_run_prints_every_input_and_starts_nothing(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    cloud_run.add_running(JOB, task_count=2, succeeded=1)
    monitoring.undelivered, monitoring.oldest_age_seconds = 45, 120
    decision = dispatch(env, "--dry-run")
    assert (decision["dry_run"], decision["action"], decision["task_count"]) == (True, "launch", 4)
    inputs = decision["inputs"]
    assert isinstance(inputs, dict)
    assert inputs["backlog"]["undelivered"] == 45
    assert inputs["backlog"]["oldest_unacked_age_seconds"] == 120
    assert inputs["running"] == [{"name": f"{JOB}/executions/running-1", "task_count": 2,
                                  "active_tasks": 1}]
    assert inputs["policy"]["messages_per_task"] == 10
    assert set(inputs) == {"backlog", "arrivals", "running", "finished", "launches", "policy"}
    assert cloud_run.run_requests == []


@pytest.mark.parametrize(("failing", "api", "role"), [
    ("monitoring", "Cloud Monitoring", "roles/monitoring.viewer"),
    ("cloud_run", "Cloud Run Admin API", "roles/run.viewer"),
])
def test_permission_denied_names_the_api_the_resource_and_the_role(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring,
        failing: str, api: str, role: str) -> None:
    server = monitoring if failing == "monitoring" else cloud_run
    server.fail(Failure(grpc.StatusCode.PERMISSION_DENIED, "Permission denied (or it may "
                                                             "not exist)"))
    message = str(dispatch(env, expect=RET_CONFIG)["error"])
    assert api in message and role in message, message
    resource = "projects/proj/subscriptions/vividly-vividly" if failing == "monitoring" else JOB
    assert resource in message
    assert cloud_run.run_requests == []


def test_a_refused_launch_names_the_role_that_runs_the_job(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 5
    cloud_run.fail_runs(Failure(grpc.StatusCode.PERMISSION_DENIED,
                                "Permission 'run.jobs.runWithOverrides' denied"))
    message = str(dispatch(env, expect=RET_CONFIG)["error"])
    assert "roles/run.developer" in message and JOB in message, message
    assert len(cloud_run.run_requests) == 1  # a refusal is not retried


def test_a_launch_is_retried_only_when_the_server_was_not_reached(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 5
    cloud_run.fail_runs(Failure(grpc.StatusCode.UNAVAILABLE, "connection reset"))
    assert dispatch(env)["task_count"] == 1
    assert task_counts(cloud_run) == [1, 1]
    # After a deadline the execution may exist: no second run_job, which could start another.
    cloud_run.finish_all()
    cloud_run.fail_runs(Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"))
    later = {**env, "DISPATCH_DECISION_WINDOW_SECONDS": "0.001",
             "DISPATCH_METRIC_SETTLE_SECONDS": "0", "DISPATCH_LAUNCH_VISIBILITY_SECONDS": "0"}
    monitoring.sampled_at = time.time() + 1
    dispatch(later, expect=RET_UNAVAILABLE)
    assert task_counts(cloud_run) == [1, 1, 1]


def test_a_job_that_does_not_exist_is_a_configuration_error(
        env: dict[str, str], cloud_run: FakeCloudRun) -> None:
    cloud_run.fail(Failure(grpc.StatusCode.NOT_FOUND, f"Resource '{JOB}' not found"))
    message = str(dispatch(env, expect=RET_CONFIG)["error"])
    assert "not found" in message and "DISPATCH_JOB" in message


def test_an_unavailable_api_is_retried_then_exits_with_the_reason(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    monitoring.undelivered = 3
    monitoring.fail(Failure(grpc.StatusCode.UNAVAILABLE, "the service is down"))
    assert dispatch(env)["task_count"] == 1  # one outage: retried, then fine
    assert len(monitoring.requests) == 3  # the failed call, its retry, the age metric
    monitoring.fail(*[Failure(grpc.StatusCode.UNAVAILABLE, "the service is down")] * 3)
    message = str(dispatch(env, expect=RET_UNAVAILABLE)["error"])
    assert "UNAVAILABLE" in message and "the service is down" in message
    assert "after 3 attempts" in message
    assert len(monitoring.requests) == 6


def test_missing_settings_of_the_cloud_run_runner_are_a_configuration_error(
        env: dict[str, str]) -> None:
    without_region = {**env, "DISPATCH_REGION": ""}
    message = str(dispatch(without_region, expect=RET_CONFIG)["error"])
    assert "DISPATCH_REGION" in message


def test_a_plain_message_queue_s_backlog_counts(
        env: dict[str, str], cloud_run: FakeCloudRun, monitoring: FakeMonitoring) -> None:
    """Queues in PUBSUB_PLAIN_MESSAGE_TASKS were consumed by the workers but never counted:
    their backlog started nothing."""
    monitoring.undelivered = 0
    monitoring.undelivered_by_subscription = {"vividly-legacy-requests": 25}
    plain = {**env, "PUBSUB_PLAIN_MESSAGE_TASKS": '{"legacy-requests": "vividly.generate_content"}'}
    decision = dispatch(plain)
    assert (decision["action"], decision["task_count"]) == ("launch", 3)
    asked = {r.filter.rpartition("subscription_id = ")[2] for r in monitoring.requests}
    assert asked == {'"vividly-vividly"', '"vividly-legacy-requests"'}
