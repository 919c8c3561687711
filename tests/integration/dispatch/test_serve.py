"""``vividly dispatch serve``: the wake-up endpoint, in real processes, against the loopback
Cloud Run and Monitoring servers; and the local runner's processes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.dispatch import (
    WAKE_UP,
    DispatchServe,
    api_env,
    apis,
    post,
    push_body,
)
from harness.fakes.cloud_run import FakeCloudRun
from harness.fakes.monitoring import FakeMonitoring
from vividly_tasks.dispatch.local_runner import LocalRunner

__all__ = ["apis"]  # the fixture


def test_200_wake_ups_in_one_second_across_two_dispatchers_start_one_execution(
        apis: tuple[FakeMonitoring, FakeCloudRun], tmp_path: Path) -> None:
    monitoring, cloud_run = apis
    env = {"GOOGLE_CLOUD_PROJECT": "proj", "DISPATCH_REGION": "europe-west1",
           "DISPATCH_MONITORING_ENDPOINT": monitoring.endpoint,
           "DISPATCH_RUN_ENDPOINT": cloud_run.endpoint,
           "DISPATCH_MESSAGES_PER_TASK": "10", "DISPATCH_MAX_TASKS": "50",
           "DISPATCH_GATHER_SECONDS": "3"}
    servers = [DispatchServe(env, tmp_path / f"dispatch-{n}.log") for n in (1, 2)]
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=200) as pool:
            codes = list(pool.map(
                lambda n: post(f"{servers[n % 2].url}/push", push_body(f"task-{n}")),
                range(200)))
        assert codes == [204] * 200
        assert time.monotonic() - started < 15
        # Sized to the burst: 20 tasks for 200 messages, in one launch when the first
        # gather saw them all, in more as the burst's arrivals outgrew it on a loaded
        # machine; never more than the burst needs.
        wait_until(lambda: sum(task_counts(cloud_run)) >= 20, 15)
        assert sum(task_counts(cloud_run)) == 20
        decisions = [d for s in servers for d in s.decisions()]
        assert {d["dispatcher_pid"] for d in decisions} == {
            s.process.pid for s in servers}  # both decided
        # Far fewer decisions than wake-ups: each process decides once per gathered part.
        assert len(decisions) < 20
    finally:
        for server in servers:
            server.stop()


def task_counts(cloud_run: FakeCloudRun) -> list[int]:
    return [r.overrides.task_count for r in cloud_run.run_requests]


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_burst_pushed_one_at_a_time_grows_to_its_size_and_holds_no_request(
        apis: tuple[FakeMonitoring, FakeCloudRun], tmp_path: Path) -> None:
    """Each push waited the gather and the emulator pushes 2 at a time: 60 requests took
    ~60 s to be seen and got 1 task instead of 3, and a request behind them waited 44 s.
    Now pushes are answered as soon as they are recorded, and the launches grow with the
    arrivals to ceil(60 / 10) tasks, within 10 s of the last."""
    _, cloud_run = apis
    server = DispatchServe({**api_env(apis), "DISPATCH_MESSAGES_PER_TASK": "10",
                            "DISPATCH_MAX_TASKS": "50", "DISPATCH_GATHER_SECONDS": "1"},
                           tmp_path / "dispatch.log")
    try:
        answered_in = []
        for n in range(60):  # one in flight at a time: push concurrency at its lowest
            sent = time.monotonic()
            assert post(f"{server.url}/push", push_body(f"burst-{n}")) == 204
            answered_in.append(time.monotonic() - sent)
        last = time.monotonic()
        wait_until(lambda: sum(task_counts(cloud_run)) >= 6, 10)
        grown_in = time.monotonic() - last
        assert sum(task_counts(cloud_run)) == 6, task_counts(cloud_run)
        assert grown_in < 10, grown_in
        # Only a decider push waits out a gather; the rest are answered at once.
        assert sorted(answered_in)[-5] < 0.5, sorted(answered_in)
        # A request behind the burst is decided on within a gather, not behind 60 of them.
        sent = time.monotonic()
        assert post(f"{server.url}/push", push_body("behind")) == 204
        wait_until(lambda: any(d["inputs"]["arrivals"]["known"] == 61  # type: ignore[index]
                               for d in server.decisions()), 10)
        assert time.monotonic() - sent < 1 + 3
    finally:
        server.stop()


def test_a_bad_body_is_refused_and_a_check_decides(
        apis: tuple[FakeMonitoring, FakeCloudRun], tmp_path: Path) -> None:
    monitoring, cloud_run = apis
    monitoring.undelivered = 3
    env = {"GOOGLE_CLOUD_PROJECT": "proj", "DISPATCH_REGION": "r",
           "DISPATCH_MONITORING_ENDPOINT": monitoring.endpoint,
           "DISPATCH_RUN_ENDPOINT": cloud_run.endpoint}
    server = DispatchServe(env, tmp_path / "dispatch.log")
    try:
        assert post(f"{server.url}/push", b"not json") == 400
        assert post(f"{server.url}/check") == 204
        assert [r.overrides.task_count for r in cloud_run.run_requests] == [1]
        assert server.decisions()[-1]["trigger"] == "check"
    finally:
        server.stop()


def test_the_local_runner_starts_one_process_per_task_and_sees_them_finish(
        tmp_path: Path) -> None:
    runner = LocalRunner(log_dir=tmp_path, command=[sys.executable, "-c",
                                                    "import time; time.sleep(1.5)"])
    name = runner.launch(3)
    [execution] = runner.executions().running
    assert (execution.name, execution.task_count, execution.active_tasks) == (name, 3, 3)
    runner.wait(timeout_seconds=10)
    states = runner.executions()
    assert states.running == []
    [finished] = states.finished
    assert (finished.name, finished.succeeded) == (name, True)
    assert len(list(tmp_path.glob(f"{name}-task-*.log"))) == 3


def test_a_plain_message_queue_wakes_the_dispatcher(
        apis: tuple[FakeMonitoring, FakeCloudRun], tmp_path: Path) -> None:
    """A plain message's wake-up (on its queue's own wake-up subscription) was refused."""
    _, cloud_run = apis
    server = DispatchServe({**api_env(apis), "PUBSUB_PLAIN_MESSAGE_TASKS":
                            '{"legacy-requests": "vividly.generate_content"}'},
                           tmp_path / "dispatch.log")
    try:
        plain = f"{WAKE_UP}-vividly-legacy-requests"
        assert post(f"{server.url}/push", push_body("legacy-1", subscription=plain)) == 204
        assert task_counts(cloud_run) == [1]
        other = "projects/proj/subscriptions/vividly-wake-up-elsewhere"
        assert post(f"{server.url}/push", push_body("x", subscription=other)) == 403
    finally:
        server.stop()
