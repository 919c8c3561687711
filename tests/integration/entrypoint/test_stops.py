"""Stopping a job mid-work: the runtime budget and SIGTERM lose nothing and run nothing twice.

Over Redis and Pub/Sub. After the stopped job, a second
job drains what the first gave back; the Redis ledger must then hold every task exactly once.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from harness.ledger import SHUTDOWN_ALLOWANCE_SECONDS, enqueue, runs
from harness.workers import WorkerProcess, broker_params


def drain_and_count(
    ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess], expected: list[str]
) -> Counter[str]:
    """Run a second job until idle; return how often each token ran over both jobs."""
    second = start_entrypoint(concurrency=4, extra_args=["--idle-timeout", "2"])
    assert second.wait(timeout=60) == 0
    counts = Counter(runs(ledger))
    assert set(counts) == set(expected), second.logs()[-3000:]
    return counts


@pytest.mark.parametrize("broker", broker_params("redis", "pubsub"), indirect=True)
def test_max_runtime_stops_taking_work_finishes_or_releases_and_exits_zero(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess]
) -> None:
    tokens = [f"slow{i}" for i in range(6)]
    enqueue(tokens, sleep_seconds=6.0)
    # Grace 3 s: the pair started at ~7.5 s cannot finish by 8 + 3 s (2.5 s short, so a slow
    # kill on a loaded machine cannot let it finish first), so the budget is hit with tasks
    # running; they are cancelled and their messages given back.
    worker = start_entrypoint(
        extra_args=["--max-runtime", "8", "--shutdown-grace", "3", "--idle-timeout", "30"]
    )
    assert worker.wait(timeout=60) == 0
    wall = time.monotonic() - worker.started_at
    assert wall < 8 + 3 + SHUTDOWN_ALLOWANCE_SECONDS[broker], wall
    summary = worker.summary()
    assert summary["exit_reason"] == "max_runtime"
    done_by_first = runs(ledger)
    assert summary["succeeded"] == len(done_by_first) >= 2

    counts = drain_and_count(ledger, start_entrypoint, tokens)
    assert set(counts.values()) == {1}, counts


@pytest.mark.parametrize("broker", broker_params("redis", "pubsub"), indirect=True)
def test_sigterm_finishes_the_running_task_and_releases_the_prefetched_ones(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_PREFETCH_MULTIPLIER", "4")  # one runs, three wait in the worker
    tokens = [f"term{i}" for i in range(4)]
    enqueue(tokens, sleep_seconds=3.0)
    worker = start_entrypoint(concurrency=1, extra_args=["--idle-timeout", "30"])
    worker.wait_for_log(lambda text: text.count("tests.record[") >= 4, timeout=30)
    time.sleep(0.5)  # the first task is running

    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 10
    assert len(runs(ledger)) == 1, "the running task completes, once"
    summary = worker.summary()
    assert summary["exit_reason"] == "sigterm"
    assert (summary["received"], summary["succeeded"]) == (4, 1)

    counts = drain_and_count(ledger, start_entrypoint, tokens)
    assert set(counts.values()) == {1}, counts


@pytest.mark.parametrize("broker", broker_params("redis"), indirect=True)
def test_sigterm_cancels_a_task_longer_than_the_budget_and_gives_it_back(
    broker: str, ledger: redis.Redis, start_entrypoint: Callable[..., WorkerProcess]
) -> None:
    enqueue(["long"], sleep_seconds=30.0)
    worker = start_entrypoint(concurrency=1, extra_args=["--idle-timeout", "60"])
    worker.wait_for_log(lambda text: "tests.record[" in text, timeout=30)
    time.sleep(0.5)

    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 10
    assert runs(ledger) == []
    assert worker.summary()["exit_reason"] == "sigterm"
    assert ledger.llen("vividly") == 1, "the cancelled task's message is back in its queue"
