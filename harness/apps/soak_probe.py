"""What the chaos soak's workers report: one record per task run, in a Redis list.

Workers load it with ``--include harness.apps.soak_probe``. A record is pushed when a content task
starts (with Pub/Sub's delivery attempt and message id) and when it ends (with the runner's
outcome), from the pool process that ran it. A worker killed mid-task leaves a start without
an end, which is what the soak expects of it. Without ``SOAK_LEDGER_URL`` this does nothing.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import redis
from celery.exceptions import Reject, Retry
from celery.signals import task_postrun, task_prerun

LEDGER_ENV = "SOAK_LEDGER_URL"
RUNS_KEY = "soak:runs"
CONTENT_TASK = "vividly.generate_content"


@functools.cache
def _ledger_of(pid: int) -> redis.Redis:
    return redis.Redis.from_url(os.environ[LEDGER_ENV])


def _push(record: dict[str, Any]) -> None:
    if os.environ.get(LEDGER_ENV):
        _ledger_of(os.getpid()).rpush(RUNS_KEY, json.dumps(record))


def _request_id(args: Any, kwargs: Any) -> str | None:
    if kwargs and "request_id" in kwargs:
        return str(kwargs["request_id"])[:80]
    return str(args[0])[:80] if args else None


@task_prerun.connect(weak=False)
def _started(task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None,
             **_: Any) -> None:
    if task is None or task.name != CONTENT_TASK:
        return
    request = task.request
    _push({
        "event": "start", "task_id": task_id, "request_id": _request_id(args, kwargs),
        "delivery_attempt": int(request.get("delivery_attempt") or 0),
        "message_id": request.get("pubsub_message_id"), "retries": int(request.retries or 0),
        "pid": os.getpid(),
    })


@task_postrun.connect(weak=False)
def _ended(task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None,
           retval: Any = None, state: str = "", **_: Any) -> None:
    if task is None or task.name != CONTENT_TASK:
        return
    if isinstance(retval, dict):
        outcome = retval.get("outcome")
    elif isinstance(retval, Retry):  # busy: claimed elsewhere; transient: a dependency failed
        outcome = "busy" if retval.exc is None else "transient"
    elif isinstance(retval, Reject):
        outcome = "rejected"
    else:
        outcome = None
    _push({
        "event": "end", "task_id": task_id, "request_id": _request_id(args, kwargs),
        "state": state, "outcome": outcome, "pid": os.getpid(),
    })
