"""Dispatch decisions on the runners' facts: the local runner's real processes and the Cloud
Run Admin API's executions (the real client on the loopback server), through the dispatcher
and its file record. Each test is a defect of deciding on a launch's age instead."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.fakes import cloud_run as fake_cloud_run
from harness.fakes.cloud_run import FakeCloudRun
from vividly_tasks.cli import cli
from vividly_tasks.cli.exit_codes import RET_CONFIG
from vividly_tasks.dispatch.cloud_run import CloudRunJob
from vividly_tasks.dispatch.dispatcher import Dispatcher, Launcher
from vividly_tasks.dispatch.inputs import Arrival, Policy
from vividly_tasks.dispatch.local_runner import LocalRunner
from vividly_tasks.dispatch.record import FileRecord

#: A launch the runner does not list counts as running for a minute, as by default: the
#: tests show that a finished one does not, whatever its age.
POLICY = Policy(messages_per_task=10, max_tasks=5, decision_window_seconds=0.01,
                metric_settle_seconds=180, launch_visibility_seconds=60,
                start_lead_seconds=0.5, job_idle_timeout_seconds=0.5)
QUICK_TASK = [sys.executable, "-c", "pass"]


def dispatcher(launcher: Launcher, tmp_path: Path, policy: Policy = POLICY) -> Dispatcher:
    return Dispatcher(policy=policy, launcher=launcher, backlog=None,
                      record=FileRecord(tmp_path / "record.sqlite", retention_seconds=3600))


def wait_finished(runner: LocalRunner, name: str) -> float:
    runner.wait(timeout_seconds=20)
    [finished] = [f for f in runner.executions().finished if f.name == name]
    return finished.finished_at


def test_a_local_execution_that_finished_is_not_running_however_young(tmp_path: Path) -> None:
    """A single request waited 63 s: the execution started for the previous one had
    finished, but its launch was younger than the visibility and counted as running."""
    runner = LocalRunner(log_dir=tmp_path / "workers", command=QUICK_TASK)
    dispatch = dispatcher(runner, tmp_path)
    dispatch.note_arrival(Arrival("first", time.time() - 5))
    first = dispatch.decide_once()
    assert first["action"] == "launch"
    wait_finished(runner, str(first["execution"]))
    dispatch.note_arrival(Arrival("second", time.time()))
    second = dispatch.decide_once()
    assert (second["action"], second["reason"]) == ("launch", "backlog_not_covered")
    assert second["execution"] != first["execution"]


def test_an_idle_exit_proves_what_was_published_before_it_done(tmp_path: Path) -> None:
    """An execution was started for a request that the previous execution had already run:
    arrivals published before an idle exit (less the idle timeout) are done."""
    runner = LocalRunner(log_dir=tmp_path / "workers",
                         command=[sys.executable, "-c", "import time; time.sleep(1.5)"])
    policy = Policy(**{**POLICY.__dict__, "launch_visibility_seconds": 0.1})
    dispatch = dispatcher(runner, tmp_path, policy)
    dispatch.note_arrival(Arrival("first", time.time()))
    first = dispatch.decide_once()
    assert first["action"] == "launch"
    dispatch.note_arrival(Arrival("during", time.time()))  # the running execution takes it
    finished_at = wait_finished(runner, str(first["execution"]))
    assert finished_at - policy.job_idle_timeout_seconds > time.time() - 2
    after = dispatch.decide_once()
    assert (after["action"], after["reason"], after["proven_done"]) == (
        "none", "nothing_waiting", 2)
    assert dispatch.record.arrivals() == []  # proven done: forgotten


def test_local_execution_names_and_logs_are_unique_across_processes(tmp_path: Path) -> None:
    """Every process named its first execution local-execution-1: three executions of one
    name in the record, their logs in one file."""
    runners = [LocalRunner(log_dir=tmp_path, command=QUICK_TASK) for _ in range(3)]
    names = [runner.launch(1) for runner in runners]
    for runner in runners:
        runner.wait(timeout_seconds=20)
    assert len(set(names)) == 3
    assert len(list(tmp_path.glob("local-*-task-0.log"))) == 3


def test_a_local_runner_sees_the_executions_another_process_started(tmp_path: Path) -> None:
    started_by_other = LocalRunner(log_dir=tmp_path, command=[
        sys.executable, "-c", "import time; time.sleep(1.5)"])
    name = started_by_other.launch(2)
    mine = LocalRunner(log_dir=tmp_path)
    [running] = mine.executions().running
    assert (running.name, running.task_count, running.active_tasks) == (name, 2, 2)
    started_by_other.wait(timeout_seconds=20)
    states = mine.executions()
    assert states.running == []
    assert [(f.name, f.succeeded) for f in states.finished] == [(name, True)]


def test_a_failed_local_task_proves_nothing(tmp_path: Path) -> None:
    runner = LocalRunner(log_dir=tmp_path, command=[sys.executable, "-c", "raise SystemExit(3)"])
    name = runner.launch(1)
    runner.wait(timeout_seconds=20)
    assert [(f.name, f.succeeded) for f in runner.executions().finished] == [(name, False)]


@pytest.fixture
def cloud_run() -> Iterator[FakeCloudRun]:
    with fake_cloud_run.running() as server:
        yield server


def test_a_completed_cloud_run_execution_is_not_running_however_young(
        cloud_run: FakeCloudRun, tmp_path: Path) -> None:
    job = CloudRunJob(project="proj", region="europe-west1", job="vividly-job",
                      endpoint=cloud_run.endpoint, attempts=1)
    dispatch = dispatcher(job, tmp_path)
    dispatch.note_arrival(Arrival("first", time.time() - 5))
    first = dispatch.decide_once()
    assert first["action"] == "launch"
    cloud_run.finish_all(at=time.time())
    dispatch.note_arrival(Arrival("second", time.time() + 0.01))
    second = dispatch.decide_once()
    assert (second["action"], second["task_count"]) == ("launch", 1)
    assert len(cloud_run.run_requests) == 2


def test_a_start_lead_longer_than_the_idle_exit_is_a_configuration_error(
        tmp_path: Path) -> None:
    """With a 30 s lead and a 10 s idle exit, the execution left before the task was due and
    nothing started another: the pair is refused at start."""
    env = {"DISPATCH_RUNNER": "local", "VIVIDLY_DATA_DIR": str(tmp_path),
           "DISPATCH_START_LEAD_SECONDS": "30", "WORKER_IDLE_TIMEOUT": "10"}
    result = CliRunner().invoke(cli, ["dispatch", "--dry-run"], env=env)
    assert result.exit_code == RET_CONFIG, result.output
    assert "DISPATCH_START_LEAD_SECONDS (30)" in result.output
    assert "WORKER_IDLE_TIMEOUT" in result.output
    fine = CliRunner().invoke(cli, ["dispatch", "--dry-run"],
                              env={**env, "DISPATCH_JOB_IDLE_TIMEOUT_SECONDS": "45"})
    assert fine.exit_code == 0, fine.output


def test_no_record_lock_is_held_across_the_run_api_call(
        cloud_run: FakeCloudRun, tmp_path: Path) -> None:
    """The lock was held across the Monitoring and Run API calls (up to 3 x 20 s): every
    wake-up waited behind a slow call. Now a wake-up is recorded and a racing decision is
    made while the launch waits for the API, and the racing decision starts no second
    execution: the reserved launch counts as running."""
    def new_dispatcher() -> Dispatcher:
        job = CloudRunJob(project="proj", region="europe-west1", job="vividly-job",
                          endpoint=cloud_run.endpoint, attempts=1)
        return dispatcher(job, tmp_path)

    first, second = new_dispatcher(), new_dispatcher()
    first.note_arrival(Arrival("a", time.time()))
    cloud_run.runs_may_answer.clear()
    results: dict[str, dict[str, object]] = {}
    launching = threading.Thread(target=lambda: results.update(first=first.decide_once()))
    launching.start()
    try:
        deadline = time.monotonic() + 10
        while not cloud_run.run_requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cloud_run.run_requests, "the launch never reached the Run API"
        racing = threading.Thread(target=lambda: (
            second.note_arrival(Arrival("b", time.time())),
            results.update(second=second.decide_once())))
        racing.start()
        racing.join(timeout=5)
        assert not racing.is_alive(), "a wake-up waited for another dispatcher's API call"
        assert results["second"]["reason"] == "covered_by_running_executions"
    finally:
        cloud_run.runs_may_answer.set()
        launching.join(timeout=30)
    assert results["first"]["action"] == "launch"
    assert len(cloud_run.run_requests) == 1
    assert [x.name for x in first.record.launches()] == [results["first"]["execution"]]
