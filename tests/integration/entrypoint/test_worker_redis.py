"""A real worker process over Redis: the app, its configuration and the harness end to end."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest
import redis

from harness.workers import WorkerProcess
from vividly_tasks import create_app


@pytest.fixture
def redis_broker(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    return redis_url


def test_task_runs_in_a_worker_process_and_its_result_comes_back(
    redis_broker: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    app = create_app()
    try:
        assert app.send_task("tests.add", (2, 3)).get(timeout=30) == 5
        assert app.send_task("vividly.health_check").get(timeout=30)["hostname"]
    finally:
        app.close()


def test_worker_logs_are_json_lines_with_severity_and_task_id(
    redis_broker: str, ledger: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker().wait_ready()
    app = create_app()
    try:
        result = app.send_task("tests.log_something", ("hello",))
        result.get(timeout=30)
    finally:
        app.close()
    worker.wait_for_log(lambda text: "task says hello" in text, timeout=10)
    worker.stop()

    records = [json.loads(line) for line in worker.logs().splitlines() if line.startswith("{")]
    assert records, worker.logs()
    assert all({"severity", "message", "time", "logger"} <= record.keys() for record in records)
    [task_record] = [r for r in records if r["message"] == "task says hello"]
    assert task_record["task_id"] == result.id
    assert task_record["task_name"] == "tests.log_something"
    assert task_record["severity"] == "INFO"


def test_pickle_is_refused_by_configuration(redis_broker: str) -> None:
    app = create_app()
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1


def test_a_warm_stop_ends_an_idle_pool_without_a_join_and_waits_for_a_running_task(
    redis_broker: str, ledger: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    """IdlePoolStop: SIGTERM to an idle worker ends its idle children (after their shutdown
    hooks) instead of joining them; with a task running, the warm stop still lets it finish."""
    idle = start_worker(hostname="idle@%h", extra_args=["--loglevel", "DEBUG"]).wait_ready()
    idle.send_signal(signal.SIGTERM)
    assert idle.wait(30) == 0
    assert "ended without a join: 2 process(es) ran their shutdown, 0 cut off" in idle.logs()

    busy = start_worker(hostname="busy@%h", extra_args=["--loglevel", "DEBUG"]).wait_ready()
    app = create_app()
    try:
        app.send_task("tests.record", ("slow", 3.0))
        assert wait_until(lambda: busy.logs().count("tests.record") > 0, 20)
        time.sleep(0.5)  # the task is running in a child
        busy.send_signal(signal.SIGTERM)
        assert busy.wait(30) == 0
    finally:
        app.close()
    assert ledger.lrange("runs", 0, -1) == ["slow"]
    assert "ended without a join" not in busy.logs()


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
