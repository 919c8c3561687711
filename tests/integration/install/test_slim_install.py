"""The adapter on its own: ``pip install .`` with no extra, in a fresh virtualenv, runs a
team's app (harness/example_project/billing.py, copied beside nothing of this repository) with
``vividly-worker job -A`` and ``service -A``, provisions and verifies its resources, lists its
dead letters; the lesson workload and its commands say which extra they need."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from harness.services import free_port
from harness.workers import REPO_ROOT

#: What the Dockerfile's build stage copies: the package as a user would get it.
SOURCES = ("pyproject.toml", "README.md", "vividly_tasks", "worker_entry")
INSTALL_TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def slim_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with ``pip install .`` of a copy of the sources, no extra."""
    root = tmp_path_factory.mktemp("slim")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
         str(source)], check=True, timeout=INSTALL_TIMEOUT_SECONDS,
    )
    return venv


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """The team's project: their app module and nothing of ours."""
    shutil.copy2(REPO_ROOT / "harness" / "example_project" / "billing.py", tmp_path / "billing.py")
    return tmp_path


@pytest.fixture
def slim_env(pubsub_project: str) -> dict[str, str]:
    """The team's environment: Celery's own variables, results off (their backend, Redis, is
    not installed in a slim virtualenv)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"],
        "CELERY_BROKER_URL": f"pubsub://{pubsub_project}",
        "CELERY_RESULT_BACKEND": "disabled",
        "LOG_FORMAT": "json",
    }


def run(venv: Path, command: str, *args: str, cwd: Path, env: dict[str, str],
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / command), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def summary_of(log: str) -> dict[str, Any]:
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    summaries = [r for r in records if r.get("event") == "worker_summary"]
    assert len(summaries) == 1, log[-4000:]
    return summaries[0]


@pytest.fixture
def producer(slim_env: dict[str, str]) -> Iterator[Celery]:
    """Sends the team's tasks from this process (the test's full install)."""
    app = Celery("billing-producer", broker=slim_env["CELERY_BROKER_URL"])
    app.conf.update(task_default_queue="billing")
    yield app
    app.close()


def test_the_slim_install_has_no_extra(slim_venv: Path, tmp_path: Path) -> None:
    listed = subprocess.run([str(slim_venv / "bin" / "pip"), "list", "--format=json"],
                            capture_output=True, text=True, check=True, timeout=60).stdout
    names = {entry["name"].lower() for entry in json.loads(listed)}
    assert {"celery", "kombu", "google-cloud-pubsub", "vividly-tasks"} <= names
    assert not names & {"sqlalchemy", "alembic", "pydantic", "pydantic-settings", "pillow",
                        "google-genai", "google-cloud-run", "google-cloud-monitoring", "redis"}


def test_the_lesson_workload_and_its_commands_name_the_extra(
    slim_venv: Path, project_dir: Path, slim_env: dict[str, str],
) -> None:
    imported = run(slim_venv, "python", "-c", "import vividly_tasks.lessons", cwd=project_dir,
                   env=slim_env)
    assert imported.returncode == 1
    assert "pip install 'vividly-tasks[lessons]'" in imported.stderr
    submitted = run(slim_venv, "vividly", "submit", "--topic", "Tides", "--modality", "text",
                    cwd=project_dir, env=slim_env)
    assert submitted.returncode == 78, submitted.stderr
    assert "vividly submit needs the lessons extra" in submitted.stderr
    dispatched = run(slim_venv, "vividly", "dispatch", "--dry-run", cwd=project_dir,
                     env=slim_env)
    assert dispatched.returncode == 78, dispatched.stderr
    assert "pip install 'vividly-tasks[dispatch]'" in dispatched.stderr
    default_app = run(slim_venv, "vividly-worker", "job", cwd=project_dir, env=slim_env)
    assert default_app.returncode == 78
    assert "lessons extra" in summary_of(default_app.stdout + default_app.stderr)["detail"]


def test_provision_verify_and_dead_letters_of_the_teams_app(
    slim_venv: Path, project_dir: Path, slim_env: dict[str, str],
) -> None:
    provisioned = run(slim_venv, "vividly", "provision", "-A", "billing", cwd=project_dir,
                      env=slim_env)
    assert provisioned.returncode == 0, provisioned.stderr
    verified = run(slim_venv, "vividly", "provision", "-A", "billing", "--verify",
                   cwd=project_dir, env=slim_env)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    letters = run(slim_venv, "vividly", "dlq", "list", "-A", "billing", cwd=project_dir,
                  env=slim_env)
    assert letters.returncode == 0, letters.stderr
    assert sorted(path.name for path in project_dir.iterdir()
                  if path.name != "__pycache__") == ["billing.py"]  # nothing written here


def test_a_job_drains_the_teams_tasks_and_exits_0(
    slim_venv: Path, project_dir: Path, slim_env: dict[str, str], producer: Celery,
) -> None:
    for amount in range(5):
        producer.send_task("billing.add", (amount, amount))
    job = run(slim_venv, "vividly-worker", "job", "-A", "billing", "--idle-timeout", "2",
              "--concurrency", "2", cwd=project_dir, env=slim_env, timeout=120)
    summary = summary_of(job.stdout + job.stderr)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    assert (summary["exit_reason"], summary["succeeded"]) == ("idle", 5)


def test_a_service_answers_ready_then_stops_on_sigterm(
    slim_venv: Path, project_dir: Path, slim_env: dict[str, str],
) -> None:
    port = free_port()
    log = project_dir.parent / f"{project_dir.name}-service.log"
    with log.open("wb") as output:
        service = subprocess.Popen(
            [str(slim_venv / "bin" / "vividly-worker"), "service", "-A", "billing",
             "--host", "127.0.0.1", "--port", str(port), "--concurrency", "1"],
            cwd=project_dir, env=slim_env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert service.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.2)
        service.send_signal(signal.SIGTERM)
        assert service.wait(30) == 0, log.read_text()[-4000:]
        assert summary_of(log.read_text())["exit_reason"] == "sigterm"
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait(10)
