"""Hostile messages through the emulator into a real worker: compression bombs, a nesting bomb
and a flood of attributes, on a task queue and on the remote-control queue.

The worker's app opted in to compression (harness/apps/hostile.py), so the bombs meet the bounded
decoder, not the plain refusal. Each bomb ends dead-lettered with its reason (the task queue)
or dropped with a log line (remote control has no dead-letter topic); the good tasks pulled
in the same Pull all run; the worker still answers; and its main process's peak RSS grows by
less than the receive limits' target of 64 MB (recorded with the test's report).
"""

from __future__ import annotations

import base64
import bz2
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from harness.apps.hostile import QUEUE
from harness.pubsub_helpers import dead_letters, publish_raw
from harness.waiting import wait_for
from harness.workers import WorkerProcess

PREFIX = "vividly-"
PIDBOX_EXCHANGE = "celery.pidbox"
HOSTNAME = "hostile@test"
#: The receive limits' target: no single message grows a worker's RSS by more than this.
RSS_BOUND_BYTES = 64 * 1024 * 1024
DECODED_BOMB_BYTES = 128 * 1024 * 1024


def envelope(body: str | bytes, headers: dict[str, Any], exchange: str, routing_key: str
             ) -> bytes:
    binary = isinstance(body, bytes)
    return json.dumps({
        "body": base64.b64encode(body).decode() if binary else body,
        "content-type": "application/json", "content-encoding": "utf-8", "headers": headers,
        "properties": {"body_encoding": "base64" if binary else None,
                       "delivery_info": {"exchange": exchange, "routing_key": routing_key}},
    }).encode()


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[bytes, str]]:
    """Compressed bodies (each >= 1000:1) and their ``compression`` header."""
    zeros = b"\0" * DECODED_BOMB_BYTES
    deflated = zlib.compress(zeros, 9)
    made = {"bz2": (bz2.compress(zeros, 9), "application/x-bz2"),
            "gzip": (deflated, "gzip"), "zlib": (deflated, "zlib")}
    for body, _ in made.values():
        assert DECODED_BOMB_BYTES / len(body) >= 1000
    return made


def hostile(bombs: dict[str, tuple[bytes, str]], exchange: str, routing_key: str
            ) -> list[tuple[str, bytes, dict[str, str], str]]:
    """(name, data, attributes, the reason's pattern) of each hostile message."""
    attributes = {"kombu-envelope": "1", "exchange": exchange, "routing_key": routing_key}
    headers = {"task": "tests.record", "id": "bomb", "lang": "py"}
    messages = [
        (name, envelope(body, {**headers, "compression": compression}, exchange, routing_key),
         attributes, "decodes to more than 10485760 bytes")
        for name, (body, compression) in bombs.items()
    ]
    depth = 100_000
    messages += [
        ("nested-body", envelope("[" * depth + "]" * depth, headers, exchange, routing_key),
         attributes, "body is JSON nested deeper than 128 levels"),
        ("nested-data", b"[" * depth + b"]" * depth, attributes,
         "data is JSON nested deeper than 128 levels"),
        ("attributes", envelope("[[], {}, {}]", headers, exchange, routing_key),
         {**attributes, **{f"flood-{i}": "x" for i in range(10_000)}},
         "10003 attributes, over Pub/Sub's limit of 100"),
    ]
    return messages


def peak_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


@pytest.fixture
def app(pubsub_project: str, redis_url: str, ledger: redis.Redis,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    monkeypatch.setenv("CELERY_BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_url)
    from harness.apps.hostile import app as hostile_app

    hostile_app.conf.broker_url = f"pubsub://{pubsub_project}"
    hostile_app.conf.result_backend = redis_url
    yield hostile_app
    hostile_app.close()


@pytest.fixture
def start_hostile_worker(tmp_path: Path) -> Iterator[Callable[[], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        import os

        command = [sys.executable, "-m", "celery", "-A", "harness.apps.hostile", "worker",
                   "--hostname", HOSTNAME, "--concurrency", "2", "--prefetch-multiplier", "8",
                   "--loglevel", "INFO", "-Q", "hostile-idle"]
        worker = WorkerProcess(command, dict(os.environ), tmp_path / "worker.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_bombs_are_settled_with_reasons_and_the_rest_of_the_pull_runs(
    app: Celery, pubsub_project: str, ledger: redis.Redis, bombs: dict[str, tuple[bytes, str]],
    start_hostile_worker: Callable[[], WorkerProcess], request: pytest.FixtureRequest,
) -> None:
    # The worker starts on another queue, so its peak RSS is read before any bomb arrives.
    worker = start_hostile_worker().wait_ready()
    app.send_task("tests.record", kwargs={"token": "first"}, queue=QUEUE)  # declares the queue
    sent = hostile(bombs, "", QUEUE)
    for _, data, attributes, _ in sent:
        publish_raw(pubsub_project, PREFIX, QUEUE, data, **attributes)
    for token in ("good-1", "good-2", "good-3"):
        app.send_task("tests.record", kwargs={"token": token}, queue=QUEUE)
    before = peak_rss_bytes(worker.pid)

    # One Pull of up to 16 messages (2 processes x 8) takes the bombs and the good tasks.
    app.control.add_consumer(QUEUE, destination=[HOSTNAME], reply=True, timeout=10)
    wait_for(lambda: ledger.llen("runs") >= 4, 60, "the four good tasks ran")
    dead = dead_letters(pubsub_project, PREFIX, QUEUE, expect=len(sent), timeout=30)
    reasons = {copy.message.data: copy.message.attributes["dead_letter_reason"] for copy in dead}
    assert len(dead) == len(sent)
    for name, data, _, pattern in sent:
        assert re.search(pattern, reasons[data]), (name, reasons[data])

    # The same on the remote-control topic: every worker gets these, and drops them.
    pidbox = hostile(bombs, PIDBOX_EXCHANGE, "")
    for _, data, attributes, _ in pidbox:
        publish_raw(pubsub_project, PREFIX, PIDBOX_EXCHANGE, data, **attributes)
    worker.wait_for_log(lambda text: text.count("which has no dead-letter topic") >= len(pidbox),
                        timeout=60)
    assert app.control.ping(destination=[HOSTNAME], timeout=10), worker.logs()[-3000:]
    for name, _, _, pattern in pidbox:
        assert re.search(rf"no dead-letter topic: [^\n]*{pattern}", worker.logs()), name

    growth = peak_rss_bytes(worker.pid) - before
    # Recorded with the test's report (pytest -rP, and JUnit XML properties).
    request.node.user_properties.append(("peak_rss_growth_bytes", growth))
    print(f"worker peak RSS growth over {len(sent) + len(pidbox)} hostile messages: "
          f"{growth / 2**20:.1f} MB")
    assert growth < RSS_BOUND_BYTES, f"peak RSS grew by {growth / 2**20:.1f} MB"
    assert sorted(ledger.lrange("runs", 0, -1)) == ["first", "good-1", "good-2", "good-3"]
    assert worker.process is not None and worker.process.poll() is None
