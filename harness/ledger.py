"""The test tasks' Redis ledger (harness.apps.worker_tasks): send them as a producer would,
read back which ran, and how long a worker may take to stop after its run."""

from __future__ import annotations

from typing import Any

import redis

from harness.apps.worker_tasks import LEDGER_KEY
from vividly_tasks import create_app

#: What Celery's prefork pool needs to stop after the run ends: billiard's children sleep
#: 1 s on exit so their last message is read. The embedded broker adds up to two 2-s turns of
#: Celery's blocking loop (its transport has no event loop to wake).
SHUTDOWN_ALLOWANCE_SECONDS = {"redis": 4.0, "pubsub": 4.0, "embedded": 7.0}


def enqueue(tokens: list[str], sleep_seconds: float = 0.0, **options: Any) -> None:
    app = create_app()
    try:
        for token in tokens:
            app.send_task("tests.record", (token, sleep_seconds), **options)
    finally:
        app.close()


def runs(ledger: redis.Redis) -> list[str]:
    return list(ledger.lrange(LEDGER_KEY, 0, -1))
