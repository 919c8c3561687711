"""``python -m worker_entry service``: readiness follows the broker; SIGTERM ends it in time.

Over a Redis server and a Pub/Sub emulator of the test's own
(the test stops and restarts it), and the same processing code as a job.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.ledger import enqueue, runs
from harness.required import require_service
from harness.services import ServiceProcess, free_port, start_pubsub_emulator, start_redis
from harness.workers import WorkerProcess, broker_params


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def wait_for_status(port: int, path: str, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = probe(port, path)
        if code == status:
            return body
        assert time.monotonic() < deadline, f"{path} stayed {code} {body}, wanted {status}"
        time.sleep(0.2)


@pytest.fixture
def own_broker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServiceProcess]:
    """A broker server of this test's own, so that stopping it disturbs no other test."""
    name: str = request.param
    if name == "redis":
        server = require_service(lambda: start_redis(tmp_path))
        monkeypatch.setenv("BROKER_URL", f"redis://127.0.0.1:{server.port}/0")
    else:
        server = require_service(lambda: start_pubsub_emulator(tmp_path))
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{server.port}")
        monkeypatch.setenv("BROKER_URL", "pubsub://test-service")
    yield server
    server.stop()


@pytest.mark.parametrize(
    "own_broker",
    broker_params("redis", "pubsub"),
    indirect=True,
)
def test_readiness_follows_the_broker_and_sigterm_stops_within_10_s(
    own_broker: ServiceProcess, ledger: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    port = free_port()
    monkeypatch.setenv("PORT", str(port))
    worker = start_entrypoint(mode="service", extra_args=["--host", "127.0.0.1"])
    body = wait_for_status(port, "/readyz", 200, timeout=30)
    assert body["consuming"] and body["broker_reachable"]
    assert probe(port, "/healthz")[0] == 200

    enqueue(["served"])  # the same processing code as a job
    deadline = time.monotonic() + 20
    while runs(ledger) != ["served"]:
        assert time.monotonic() < deadline, worker.logs()[-3000:]
        time.sleep(0.1)

    own_broker.stop()
    body = wait_for_status(port, "/readyz", 503, timeout=15)
    assert not (body["consuming"] and body["broker_reachable"]), body
    assert probe(port, "/healthz")[0] == 200, "alive while the broker is away"

    own_broker.start()
    wait_for_status(port, "/readyz", 200, timeout=45)

    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 10
    summary = worker.summary()
    assert summary["mode"] == "service" and summary["exit_reason"] == "sigterm"
    assert summary["succeeded"] == 1


def test_both_endpoints_answer_503_from_sigterm_until_the_drain_ends(
    pubsub_project: str, ledger: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    """Cloud Run and load balancers stop routing at the first 503; a closed port during the
    drain would read as a crash instead."""
    port = free_port()
    monkeypatch.setenv("PORT", str(port))
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    worker = start_entrypoint(mode="service", concurrency=1,
                              extra_args=["--host", "127.0.0.1", "--shutdown-grace", "6"])
    wait_for_status(port, "/readyz", 200, timeout=30)
    enqueue(["long"], sleep_seconds=10)
    worker.wait_for_log(lambda text: "tests.record" in text and "received" in text, 30)
    time.sleep(0.5)  # the task is running in the pool

    worker.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    seen: list[tuple[float, int, int]] = []
    while worker.process is not None and worker.process.poll() is None:
        seen.append((time.monotonic() - signalled, probe(port, "/healthz")[0],
                     probe(port, "/readyz")[0]))
        time.sleep(0.1)
    # From Celery's handling of the signal (the first probes may race it) to the exit.
    first = next(i for i, (_, healthz, _) in enumerate(seen) if healthz == 503)
    assert seen[first][0] < 1.0, seen
    answered = [(at, codes) for at, *codes in seen[first:] if codes != [0, 0]]  # 0: gone
    assert {tuple(codes) for _, codes in answered} == {(503, 503)}, seen
    # Answered through the drain: the task ran on until the grace (6 s) was spent.
    assert answered[-1][0] - answered[0][0] >= 4.0, seen
    assert worker.wait(timeout=5) == 0
