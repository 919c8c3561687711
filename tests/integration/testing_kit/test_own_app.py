"""A team's own Celery app on the adapter: harness/example_project/billing.py.

It runs under ``celery -A ... worker`` and under ``vividly-worker job -A ...`` over the Pub/Sub
emulator, with a chord, a countdown and a retry; under the entrypoint it gets the summary and
exit codes of ours and none of the product's settings, database or files. The README shows
the example's code line by line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, chord

from harness.example_project import billing
from harness.pubsub_helpers import publish_raw
from harness.workers import REPO_ROOT, WorkerProcess

APP = "harness.example_project.billing"
README_BEGIN, README_END = "# --- README: begin ---\n", "# --- README: end ---\n"


@pytest.fixture
def billing_env(pubsub_project: str, redis_url: str, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> dict[str, str]:
    """The environment a deployment of the example would have (Celery's own variables)."""
    monkeypatch.setenv("CELERY_BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_url)
    # The product's settings, present and wrong for this app: none of them may be used.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'theirs.sqlite'}")
    monkeypatch.setenv("VIVIDLY_QUEUE", "not-billing")
    return dict(os.environ)


@pytest.fixture
def client(billing_env: dict[str, str]) -> Iterator[Celery]:
    """A producer with the example's configuration (the example's module-level app caches
    its first broker and backend, and every test has its own)."""
    app = Celery("billing-client", broker=billing_env["CELERY_BROKER_URL"],
                 backend=billing_env["CELERY_RESULT_BACKEND"])
    app.conf.update(task_default_queue=billing.app.conf.task_default_queue)
    yield app
    app.close()


def drained_job(env: dict[str, str], tmp_path: Path, *options: str,
                timeout: float = 90) -> WorkerProcess:
    """``vividly-worker job -A`` the example app, run to its exit, which must be 0."""
    command = [sys.executable, "-m", "worker_entry", "job", "-A", APP, *options]
    job = WorkerProcess(command, env, tmp_path / "job.log").start()
    try:
        assert job.wait(timeout) == 0, job.logs()[-4000:]
    finally:
        job.stop()
    return job


def test_the_readme_shows_the_example_app_line_by_line() -> None:
    source = (REPO_ROOT / "harness" / "example_project" / "billing.py").read_text()
    code = source.split(README_BEGIN)[1].split(README_END)[0]
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"```python\n{code}```" in readme


def test_celery_worker_runs_a_chord_a_countdown_and_a_retry_of_the_example_app(
    billing_env: dict[str, str], client: Celery, pubsub_project: str, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "celery", "-A", APP, "-b", f"pubsub://{pubsub_project}",
               "worker", "--hostname", "billing@%h", "--concurrency", "2", "--loglevel", "INFO"]
    with WorkerProcess(command, billing_env, tmp_path / "worker.log").start() as worker:
        worker.wait_ready()
        header = [client.signature("billing.add", (i, i)) for i in range(1, 4)]
        assert chord(header, client.signature("billing.total")).apply_async().get(timeout=30) \
            == 12
        sent_at = time.monotonic()
        assert client.send_task("billing.add", (2, 3), countdown=3).get(timeout=30) == 5
        assert time.monotonic() - sent_at >= 2.9
        retried = client.send_task("billing.charge", ("inv-1",), {"fail_times": 2})
        assert retried.get(timeout=30) == {"invoice": "inv-1", "attempts": 3}
    # attach(app): the worker's own log lines are JSON with Cloud Logging's severity.
    assert any(r.get("severity") == "INFO" for r in worker.json_records()), worker.logs()[-2000:]


def test_vividly_worker_job_drains_the_example_app_and_exits_with_its_summary(
    billing_env: dict[str, str], client: Celery, pubsub_project: str, tmp_path: Path
) -> None:
    results = [client.send_task("billing.add", (i, 1)) for i in range(5)]
    client.send_task("billing.no_such_task")  # taken, refused, dead-lettered, counted
    # Refused by the transport itself (not a Kombu message): dead-lettered, counted the same.
    publish_raw(pubsub_project, "vividly-", "billing", b"not a task")
    # On the queue's topic, routed to no queue: dropped as AMQP would, and counted.
    stray = json.dumps({"body": "[[], {}, {}]", "content-type": "application/json",
                        "headers": {"task": "billing.add", "id": "stray"}, "properties": {}})
    publish_raw(pubsub_project, "vividly-", "billing", stray.encode(), exchange="",
                routing_key="elsewhere", **{"kombu-envelope": "1"})
    job = drained_job(billing_env, tmp_path, "--idle-timeout", "3", "--concurrency", "2")
    assert [r.get(timeout=10) for r in results] == [1, 2, 3, 4, 5]
    summary = job.summary()
    assert summary["exit_reason"] == "idle"
    assert (summary["exit_code"], summary["received"], summary["refused"],
            summary["unmatched"], summary["succeeded"]) == (0, 7, 2, 1, 5)
    # Their app, their configuration: the product's database, data directory and queue
    # setting were in the environment, and none of them was touched or used.
    assert not (tmp_path / "theirs.sqlite").exists()
    assert not (tmp_path / "data").exists()


def test_a_job_on_a_queue_nobody_declared_says_so_instead_of_idling_as_usual(
    billing_env: dict[str, str], pubsub_project: str, tmp_path: Path
) -> None:
    """The prefix trap: producers publish under one name, the job consumes another."""
    command = [sys.executable, "-m", "worker_entry", "job", "-A", APP, "--idle-timeout", "1"]
    job = WorkerProcess(command, billing_env, tmp_path / "job.log").start()
    assert job.wait(60) == 0, job.logs()[-4000:]
    summary = job.summary()
    subscription = f"projects/{pubsub_project}/subscriptions/vividly-billing"
    assert (summary["exit_reason"], summary["severity"]) == ("queue_missing", "WARNING")
    assert summary["missing_queues"] == [subscription]
    assert subscription in summary["detail"] and "PUBSUB_PREFIX" in summary["detail"]


def test_vividly_worker_names_an_app_it_cannot_load(
    billing_env: dict[str, str], tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "worker_entry", "job", "-A", "tests.no_such_app"]
    job = WorkerProcess(command, billing_env, tmp_path / "job.log").start()
    assert job.wait(60) == 78
    summary = job.summary()
    assert summary["exit_reason"] == "bad_configuration"
    assert "cannot load the Celery app 'tests.no_such_app'" in summary["detail"]
    assert summary["severity"] == "ERROR"


def test_queues_given_as_celery_takes_them_are_each_consumed(
    billing_env: dict[str, str], client: Celery, tmp_path: Path
) -> None:
    """``-Q alpha,beta`` is two queues, as in ``celery worker`` (not one named "alpha,beta")."""
    results = [client.send_task("billing.add", (1, 1), queue="alpha"),
               client.send_task("billing.add", (2, 2), queue="beta")]
    job = drained_job(billing_env, tmp_path, "--idle-timeout", "2", "-Q", "alpha,beta",
                      timeout=60)
    assert [r.get(timeout=10) for r in results] == [2, 4]
    summary = job.summary()
    assert (summary["exit_reason"], summary["succeeded"]) == ("idle", 2)
    assert "missing_queues" not in summary
