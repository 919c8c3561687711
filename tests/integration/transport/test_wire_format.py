"""docs/wire-format.md's example, run as written: a shell producer enqueues a real Celery task."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from harness.workers import REPO_ROOT, WorkerProcess
from vividly_tasks import create_app


def doc_example() -> str:
    text = (REPO_ROOT / "docs" / "wire-format.md").read_text()
    [example] = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    return example


def test_the_documented_curl_example_enqueues_a_task_that_a_worker_runs(
    pubsub_project: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    monkeypatch.setenv("PROJECT", pubsub_project)
    start_worker().wait_ready()  # declares the queue's subscription, as the doc requires

    task_id = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_example()],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()

    app = create_app()
    try:
        result = app.AsyncResult(task_id).get(timeout=30)
    finally:
        app.close()
    assert result["hostname"]
