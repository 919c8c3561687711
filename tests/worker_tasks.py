"""Tasks that exist only for the tests; workers load them with ``--include``.

Each run is recorded in a Redis list (``TEST_LEDGER_URL``), so a test can count exactly how
often a task ran, across processes.
"""

from __future__ import annotations

import os
import time

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
