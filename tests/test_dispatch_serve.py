"""``vividly dispatch serve``: the wake-up endpoint, in real processes, against the loopback
Cloud Run and Monitoring servers; and the local runner's processes."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.dispatch_support import DispatchServe, apis, post, push_body
from tests.fake_cloud_run import FakeCloudRun
from tests.fake_monitoring import FakeMonitoring
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
        # Each push is held for the gather, as Pub/Sub's concurrent deliveries would be.
        assert time.monotonic() - started < 15
        assert len(cloud_run.run_requests) == 1
        # Sized to the burst the gather saw (20 tasks for all 200; a loaded machine may
        # record some after it), not to the first message.
        assert 10 <= cloud_run.run_requests[0].overrides.task_count <= 20
        decisions = [d for s in servers for d in s.decisions()]
        assert [d["action"] for d in decisions].count("launch") == 1
        assert {d["dispatcher_pid"] for d in decisions} == {
            s.process.pid for s in servers}  # both decided; one launched
        # Far fewer decisions than wake-ups: each process decides once per gathered burst.
        assert len(decisions) < 20
    finally:
        for server in servers:
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
