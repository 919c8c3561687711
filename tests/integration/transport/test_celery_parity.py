"""Celery features that work on the Redis broker work on ``pubsub://``.

Two cases from Celery's own integration tests, each with a real ``celery worker`` process:

* a chord whose header message is delivered twice: the test republishes from a
  ``before_task_publish`` handler with ``**kwargs``, which carries Celery's Signal object into
  the message properties, which JSON cannot carry: the copy still goes out (wire.py leaves
  out such a property, as AMQP does);
* revoking (by id or by stamped headers) right before publishing the task: Pub/Sub delivers
  the workers' broadcast subscription and the task queue independently, so the task may
  arrive first; command_fence.py holds it for the command, and it never runs.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, chain, chord
from celery.canvas import StampingVisitor
from celery.exceptions import TaskRevokedError
from celery.signals import before_task_publish

import vividly_tasks.transport  # noqa: F401 - registers pubsub://
from harness.workers import WorkerProcess

APP = "harness.apps.parity"
#: Tries per kind of revoke; before the fence each lost about half of them.
REVOKE_TRIES = 6


@pytest.fixture
def parity_env(pubsub_project: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
               ) -> dict[str, str]:
    monkeypatch.setenv("CELERY_BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_url)
    return dict(os.environ)


@pytest.fixture
def worker(parity_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    command = [sys.executable, "-m", "celery", "-A", APP, "worker", "--hostname", "parity@%h",
               "--concurrency", "2", "--loglevel", "INFO"]
    with WorkerProcess(command, parity_env, tmp_path / "worker.log").start() as process:
        process.wait_ready()
        yield process


@pytest.fixture
def client(parity_env: dict[str, str], worker: WorkerProcess) -> Iterator[Celery]:
    app = Celery("parity-client", broker=parity_env["CELERY_BROKER_URL"],
                 backend=parity_env["CELERY_RESULT_BACKEND"])
    app.conf.update(task_default_queue="parity")
    # Remote control answers: the worker's broadcast consumer is listening.
    assert app.control.ping(timeout=10), worker.logs()[-3000:]
    yield app
    # AsyncResult.get() left a Redis pub/sub connection open; app.close() does not close it.
    app.backend.result_consumer.stop()
    app.backend.client.connection_pool.disconnect()
    app.close()
    # Collect this client's own cycles here: a Redis socket still held in one (Celery's
    # result consumer) would otherwise be reported as unclosed in whatever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_a_chord_whose_header_message_is_delivered_twice_keeps_one_group_id(
    client: Celery, parity_env: dict[str, str], worker: WorkerProcess
) -> None:
    key = f"group-ids-{uuid.uuid4().hex}"

    def publish_twice(sender: Any = None, body: Any = None, exchange: Any = None,
                      routing_key: Any = None, headers: Any = None, properties: Any = None,
                      declare: Any = None, retry_policy: Any = None, **kwargs: Any) -> None:
        # Celery's test_chord_header_id_duplicated_on_rabbitmq_msg_duplication, as written.
        with client.producer_pool.acquire(block=True) as producer:
            producer.publish(body, exchange=exchange, routing_key=routing_key, retry=None,
                             retry_policy=retry_policy, serializer="json", delivery_mode=None,
                             headers=headers, **kwargs)

    before_task_publish.connect(publish_twice)
    try:
        workflow = chain(
            client.signature("parity.identity", (42,)),
            chord([client.signature("parity.record_group", (key,)),
                   client.signature("parity.identity")],
                  client.signature("parity.identity")),
        )
        assert workflow.delay().get(timeout=30) == [42, 42]
    finally:
        before_task_publish.disconnect(publish_twice)
    # The first task ran twice, so the chord was published twice: with the same group id.
    with redis.Redis.from_url(parity_env["CELERY_RESULT_BACKEND"]) as backend:
        deadline = time.monotonic() + 15
        while backend.llen(key) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        group_ids = backend.lrange(key, 0, -1)
    assert len(group_ids) == 2, worker.logs()[-3000:]
    assert group_ids[0] == group_ids[1] != b""


def test_a_revoke_by_id_sent_just_before_its_task_always_wins(client: Celery) -> None:
    outcomes = []
    for _ in range(REVOKE_TRIES):
        task_id = uuid.uuid4().hex
        client.control.revoke(task_id)
        result = client.send_task("parity.add", (1, 1), task_id=task_id)
        outcomes.append(_outcome(result))
    assert outcomes == ["REVOKED"] * REVOKE_TRIES


def test_a_revoke_by_stamped_headers_sent_just_before_its_canvas_always_wins(
    client: Celery
) -> None:
    outcomes = []
    for _ in range(REVOKE_TRIES):
        monitoring_id = uuid.uuid4().hex
        stamped = client.signature("parity.add", (1, 1), immutable=True)
        stamped.stamp(visitor=MonitoringId(monitoring_id))
        result = stamped.freeze()
        result.revoke_by_stamped_headers(headers={"monitoring_id": monitoring_id})
        # Inside a canvas, as Celery's complex-canvas test does.
        chain(client.signature("parity.identity", (1,), immutable=True), stamped).apply_async()
        outcomes.append(_outcome(result))
    assert outcomes == ["REVOKED"] * REVOKE_TRIES


class MonitoringId(StampingVisitor):
    """Celery's test visitor: one stamp, ``monitoring_id``."""

    def __init__(self, monitoring_id: str) -> None:
        self.monitoring_id = monitoring_id

    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        return {"monitoring_id": self.monitoring_id, "stamped_headers": ["monitoring_id"]}


def _outcome(result: Any) -> str:
    try:
        result.get(timeout=15)
    except TaskRevokedError:
        return "REVOKED"
    return "RAN"
