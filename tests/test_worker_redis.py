"""A real worker process over Redis: the app, its configuration and the harness end to end."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from tests.workers import WorkerProcess
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
