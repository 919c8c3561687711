"""Plain-message bindings in a real worker process: a binding to a task the worker lacks
stops it at start."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from harness.workers import WorkerProcess


def test_a_worker_whose_binding_names_a_task_it_lacks_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS", '{"api": "tests.no_such_task"}')
    worker = start_worker()
    assert worker.wait(timeout=60) == os.EX_CONFIG
    assert "binds queues to tasks this worker does not have: api -> tests.no_such_task" in (
        worker.logs())
