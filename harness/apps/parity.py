"""A plain Celery app (not ours) for tests/integration/transport/test_celery_parity.py: the few
tasks of Celery's own integration suite (t/integration/tasks.py) that its two pubsub-only
failures used."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

import vividly_tasks.transport  # noqa: F401 - registers pubsub://

app = Celery("parity")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL"),
    result_backend=os.environ.get("CELERY_RESULT_BACKEND"),
    task_default_queue="parity",
)


@app.task(name="parity.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="parity.identity")
def identity(value: object) -> object:
    return value


@app.task(name="parity.sleeping")
def sleeping(seconds: float) -> None:
    time.sleep(seconds)


@app.task(name="parity.record_group", bind=True)
def record_group(self: object, value: object, key: str) -> object:
    """Celery's ``redis_echo_group_id``: note the group id this task ran in."""
    with redis.Redis.from_url(app.conf.result_backend) as client:
        client.rpush(key, self.request.group or "")  # type: ignore[attr-defined]
    return value
