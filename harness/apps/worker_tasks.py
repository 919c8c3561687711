"""Tasks that exist only for the tests; workers load them with ``--include``.

Each run is recorded in a Redis list (``TEST_LEDGER_URL``), so a test can count exactly how
often a task ran, across processes.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import shared_task

LEDGER_KEY = "runs"


def _ledger() -> redis.Redis:
    return redis.Redis.from_url(os.environ["TEST_LEDGER_URL"], decode_responses=True)


@shared_task(name="tests.add")
def add(x: int, y: int) -> int:
    return x + y


@shared_task(name="tests.record")
def record(token: str, sleep_seconds: float = 0.0) -> str:
    """Sleep, then record one run of ``token``."""
    time.sleep(sleep_seconds)
    with _ledger() as ledger:
        ledger.rpush(LEDGER_KEY, token)
    return token


@shared_task(name="tests.log_something")
def log_something(text: str) -> None:
    from celery.utils.log import get_task_logger

    get_task_logger(__name__).info("task says %s", text)


@shared_task(name="tests.sum_all")
def sum_all(values: list[int]) -> int:
    return sum(values)


@shared_task(name="tests.size_of")
def size_of(data: str) -> int:
    return len(data)


@shared_task(name="tests.flaky", bind=True, max_retries=5)
def flaky(self: Any, token: str, failures: int) -> int:
    """Fails ``failures`` times (retrying with a countdown), then records one success."""
    if self.request.retries < failures:
        raise self.retry(countdown=1)
    with _ledger() as ledger:
        ledger.rpush(LEDGER_KEY, token)
    return int(self.request.retries)


@shared_task(name="tests.spawn_canvas")
def spawn_canvas() -> dict[str, str]:
    """Starts a chain and a chord from inside a task (so from a prefork child)."""
    from celery import chain, chord

    chained = chain(add.s(1, 2), add.s(3)).apply_async()
    chorded = chord([add.s(i, i) for i in range(4)], sum_all.s()).apply_async()
    return {"chain": chained.id, "chord": chorded.id}


@shared_task(name="tests.delivery_attempt", bind=True)
def delivery_attempt(self: Any) -> int:
    return int(self.request.get("delivery_attempt") or 0)


@shared_task(name="tests.reject_me")
def reject_me(reason: str) -> None:
    from celery.exceptions import Reject

    raise Reject(reason, requeue=False)


PLAIN_MESSAGES_KEY = "plain_messages"


@shared_task(name="tests.record_plain_message", bind=True)
def record_plain_message(self: Any, token: str, count: int = 1) -> str:
    """Bound to a queue of plain messages: records its arguments and what the request says of
    the Pub/Sub message (as JSON in the ledger)."""
    import json

    request = self.request
    seen = {
        "token": token, "count": count, "task_id": request.id,
        "message_id": request.get("pubsub_message_id"),
        "attributes": request.get("pubsub_attributes"),
        "publish_time": request.get("pubsub_publish_time"),
        "delivery_attempt": request.get("delivery_attempt"),
    }
    with _ledger() as ledger:
        ledger.rpush(PLAIN_MESSAGES_KEY, json.dumps(seen))
    return token
