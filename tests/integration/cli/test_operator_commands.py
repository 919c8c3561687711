"""``vividly provision -A`` and ``vividly dlq -A`` on a team's own app (tests/example_project/
shop.py: queues on a direct, a topic and a fanout exchange): provisioning creates exactly what
that app's workers declare, so a worker started after it delivers every route; ``--verify``
sees a changed binding; nothing of the product is read or written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from harness.workers import REPO_ROOT, WorkerProcess

APP = "harness.example_project.shop"


def vividly(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("vividly")), *args], check=False, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def shop_env(pubsub_project: str, ledger: redis.Redis,
             monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # No result backend: the tasks record their runs in the ledger.
    monkeypatch.setenv("CELERY_BROKER_URL", f"pubsub://{pubsub_project}")
    return dict(os.environ)


def test_provision_creates_what_the_apps_workers_declare_and_verify_sees_a_change(
    shop_env: dict[str, str], ledger: redis.Redis, tmp_path: Path
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    created = vividly("provision", "-A", APP, cwd=workdir)
    assert created.returncode == 0, created.stdout + created.stderr
    for name in ("vividly-orders", "vividly-emails", "vividly-audit", "vividly-shop",
                 "vividly-shop-events", "vividly-shop-broadcast"):
        assert name in created.stdout, created.stdout
    verified = vividly("provision", "-A", APP, "--verify", cwd=workdir)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A worker started after provisioning takes every route: direct, topic and fanout.
    from harness.example_project.shop import app  # reads CELERY_BROKER_URL on first use

    try:
        app.send_task("tests.record", ("to-orders",), queue="orders")
        app.send_task("tests.record", ("to-emails",), queue="emails", routing_key="email.welcome")
        app.send_task("tests.record", ("to-audit",), queue="audit")
    finally:
        app.close()
    command = [sys.executable, "-m", "worker_entry", "job", "-A", APP, "--idle-timeout", "3"]
    job = WorkerProcess(command, shop_env, tmp_path / "job.log").start()
    try:
        assert job.wait(90) == 0, job.logs()[-4000:]
    finally:
        job.stop()
    assert sorted(ledger.lrange("runs", 0, -1)) == ["to-audit", "to-emails", "to-orders"]
    assert "missing_queues" not in job.summary()

    # A new version binds the emails queue differently: its binding record is missing.
    changed = vividly("provision", "-A", APP, "--verify", cwd=workdir, SHOP_EMAIL_KEY="mail.#")
    assert changed.returncode == 77, changed.stdout + changed.stderr
    assert "mail.#" in changed.stdout and "missing" in changed.stdout

    letters = vividly("dlq", "list", "-A", APP, "-Q", "emails", cwd=workdir)
    assert letters.returncode == 0, letters.stdout + letters.stderr
    assert "0 dead letter(s) on" in letters.stdout
    assert "vividly-emails-dead-letter" in letters.stdout
    default = vividly("dlq", "list", "-A", APP, cwd=workdir)  # the app's default queue
    assert "vividly-orders-dead-letter" in default.stdout, default.stdout + default.stderr
    assert list(workdir.iterdir()) == []  # nothing of the product written where it ran


def test_an_app_that_cannot_be_loaded_is_a_configuration_error(tmp_path: Path) -> None:
    result = vividly("provision", "-A", "no_such_module:app", cwd=tmp_path)
    assert result.returncode == 78
    assert "cannot load the Celery app 'no_such_module:app'" in result.stderr
