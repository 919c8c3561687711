"""``python -m worker_entry job`` as real processes: idle exit, max tasks, a shared backlog, ETAs.

Exit on an empty queue, exactly N tasks, a backlog shared by three jobs, a countdown beyond the
idle timeout and the JSON summary, over Redis and Pub/Sub (the empty queue and the shared
backlog over the embedded filesystem broker too). The Redis ledger (harness.apps.worker_tasks)
counts every run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from harness.ledger import SHUTDOWN_ALLOWANCE_SECONDS, enqueue, runs
from harness.pubsub_helpers import dead_letters, publish_raw
from harness.workers import WorkerProcess, broker_params
from vividly_tasks import create_app

SUMMARY_FIELDS = {
    "event", "mode", "exit_reason", "exit_code", "received", "processed", "succeeded",
    "failed", "retried", "success_rate", "runtime_seconds", "severity", "time", "message",
}


def declare_queue() -> None:
    app = create_app()
    try:
        with app.connection_for_write() as connection:
            app.amqp.queues[app.conf.task_default_queue](connection.default_channel).declare()
    finally:
        app.close()


def take_from_queue(expect: int, timeout: float) -> list[str]:
    """Consume and ack task messages as the next worker would; returns their tokens."""
    app = create_app()
    tokens: list[str] = []

    def on_message(body: Any, message: Any) -> None:
        tokens.append(body[0][0])
        message.ack()

    try:
        queue = app.amqp.queues[app.conf.task_default_queue]
        with app.connection_for_read() as connection, connection.Consumer(
            queue, callbacks=[on_message], accept=["json"], prefetch_count=expect
        ):
            deadline = time.monotonic() + timeout
            while len(tokens) < expect and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=0.2)
                except TimeoutError:
                    continue
    finally:
        app.close()
    return tokens


@pytest.mark.parametrize("broker", broker_params("redis", "embedded", "pubsub"), indirect=True)
def test_empty_queue_exits_zero_after_the_idle_timeout(
    broker: str, start_entrypoint: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUD_RUN_EXECUTION", "vividly-job-abc12")
    monkeypatch.setenv("CLOUD_RUN_TASK_INDEX", "2")
    monkeypatch.setenv("CLOUD_RUN_TASK_ATTEMPT", "1")
    declare_queue()  # as the first publish would: a queue nobody declared is another story
    worker = start_entrypoint(extra_args=["--idle-timeout", "5"])
    worker.wait_ready(timeout=30)
    startup = time.monotonic() - worker.started_at

    assert worker.wait(timeout=30) == 0
    wall = time.monotonic() - worker.started_at

    assert wall < 5 + startup + SHUTDOWN_ALLOWANCE_SECONDS[broker], (startup, wall)
    assert wall >= 5
    summary = worker.summary()
    assert summary.keys() >= SUMMARY_FIELDS
    assert summary["exit_reason"] == "idle" and summary["exit_code"] == 0
    assert summary["processed"] == 0 and summary["success_rate"] is None
    assert summary["cloud_run_execution"] == "vividly-job-abc12"
    assert summary["cloud_run_task_index"] == 2
    assert summary["cloud_run_task_attempt"] == 1
    print(f"{broker}: start-up {startup:.2f} s, wall {wall:.2f} s with --idle-timeout 5")


@pytest.mark.parametrize("broker", broker_params("redis", "pubsub"), indirect=True)
def test_max_tasks_runs_exactly_n_and_leaves_the_rest_for_the_next_worker(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess]
) -> None:
    tokens = [f"t{i:02d}" for i in range(30)]
    enqueue(tokens)
    worker = start_entrypoint(extra_args=["--max-tasks", "10", "--idle-timeout", "30"])

    assert worker.wait(timeout=60) == 0
    ran = runs(ledger)
    assert len(ran) == 10 and len(set(ran)) == 10

    left = take_from_queue(expect=20, timeout=3.0)
    assert sorted(left) == sorted(set(tokens) - set(ran))
    summary = worker.summary()
    assert summary["exit_reason"] == "max_tasks"
    assert summary["received"] == 10
    assert (summary["processed"], summary["succeeded"], summary["failed"]) == (10, 10, 0)
    assert summary["success_rate"] == 1.0


@pytest.mark.parametrize("broker", broker_params("redis", "embedded", "pubsub"), indirect=True)
def test_three_jobs_share_a_backlog_and_run_each_task_exactly_once(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess]
) -> None:
    # The embedded broker polls (a worker whose prefetch is full sleeps 1 s), so it gets
    # fewer tasks to keep the run short; exactly-once is what is checked.
    tokens = [f"b{i:03d}" for i in range(60 if broker == "embedded" else 200)]
    enqueue(tokens, sleep_seconds=0.05)
    workers = [start_entrypoint(extra_args=["--idle-timeout", "3"]) for _ in range(3)]

    assert [worker.wait(timeout=90) for worker in workers] == [0, 0, 0]
    counts = Counter(runs(ledger))
    assert set(counts) == set(tokens)
    assert set(counts.values()) == {1}, [t for t, n in counts.items() if n > 1]
    summaries = [worker.summary() for worker in workers]
    assert {s["exit_reason"] for s in summaries} == {"idle"}
    assert sum(s["succeeded"] for s in summaries) == len(tokens)


@pytest.mark.parametrize("broker", broker_params("redis", "pubsub"), indirect=True)
def test_a_task_due_after_the_idle_timeout_runs_on_time_in_the_next_job(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess]
) -> None:
    countdown = 12.0  # beyond the idle timeout, and beyond a loaded machine's start + exit
    enqueued_at = time.monotonic()
    enqueue(["later"], countdown=countdown)
    due = enqueued_at + countdown

    first = start_entrypoint(extra_args=["--idle-timeout", "2"])
    assert first.wait(timeout=30) == 0
    assert time.monotonic() < due, "the first job should have exited before the task was due"
    assert first.summary()["exit_reason"] == "idle"
    assert first.summary()["received"] == 1
    assert runs(ledger) == []

    # Long enough to be there when the task is due: a broker may hold a released ETA
    # message until near its due time (Pub/Sub nacks it with a delay).
    idle_timeout = max(3.0, due - time.monotonic() + 3.0)
    second = start_entrypoint(extra_args=["--idle-timeout", f"{idle_timeout:.1f}"])
    while not runs(ledger):
        assert time.monotonic() < due + 10, second.logs()[-3000:]
        time.sleep(0.05)
    ran_at = time.monotonic()
    assert due - 0.5 <= ran_at <= due + 3.0, (ran_at - due)
    assert second.wait(timeout=30) == 0
    assert runs(ledger) == ["later"]
    assert second.summary()["exit_reason"] == "idle"


def test_the_summary_is_one_json_line_on_stdout_or_stderr(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess]
) -> None:
    enqueue(["a", "b"])
    worker = start_entrypoint(extra_args=["--idle-timeout", "1"])
    assert worker.wait(timeout=30) == 0
    lines = [line for line in worker.logs().splitlines() if '"worker_summary"' in line]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary.keys() >= SUMMARY_FIELDS
    assert summary["received"] == 2 and summary["succeeded"] == 2
    assert summary["runtime_seconds"] > 1
    assert not {"cloud_run_execution", "cloud_run_task_index"} & summary.keys()


@pytest.mark.parametrize("broker", broker_params("pubsub"), indirect=True)
def test_a_task_cancelled_at_every_stop_still_reaches_the_dead_letter_topic(
    broker: str, ledger: redis.Redis, pubsub_project: str,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    """A message whose task started counts every return toward the dead-letter policy (the
    worker behaviours tell the transport it started), so one that outlasts every job's
    runtime budget is dead-lettered after 5 deliveries, not renewed forever like a message
    that was only held (tests/integration/transport/test_contract.py)."""
    enqueue(["too-long"], sleep_seconds=120)
    for attempt in range(1, 6):
        job = start_entrypoint(extra_args=[
            "--max-runtime", "5", "--shutdown-grace", "0.5", "--idle-timeout", "30"])
        assert job.wait(timeout=60) == 0, job.logs()[-3000:]
        summary = job.summary()
        assert (summary["exit_reason"], summary["received"]) == ("max_runtime", 1), attempt
    # The sixth delivery is Pub/Sub's dead-letter forwarding, after the retry policy's
    # backoff: a job pulling meanwhile sees nothing.
    last = start_entrypoint(extra_args=["--idle-timeout", "90"])
    found = dead_letters(pubsub_project, "vividly-", "vividly", expect=1, timeout=60)
    last.stop()
    assert last.summary()["received"] == 0
    [dead] = found
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert "kombu-releases" not in dead.message.attributes  # never renewed
    assert runs(ledger) == []


@pytest.mark.parametrize("broker", broker_params("pubsub"), indirect=True)
def test_a_message_dead_lettered_unread_keeps_the_job_for_its_idle_timeout(
    broker: str, pubsub_project: str, start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    """An idle exit means nothing received for the idle timeout; the dispatcher reads it as
    proof that what was published before (exit - timeout) was taken. A message the transport
    dead-lettered before Celery saw it counted for nothing, so the job left 2 s after taking
    poison and the dispatcher started an execution for a message already settled."""
    declare_queue()
    worker = start_entrypoint(extra_args=["--idle-timeout", "8"])
    worker.wait_ready(timeout=30)
    time.sleep(3)
    publish_raw(pubsub_project, "vividly-", "vividly", b"not a task message")
    published = time.monotonic()
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - published >= 7.9
    summary = worker.summary()
    assert (summary["exit_reason"], summary["received"], summary["refused"]) == ("idle", 1, 1)
