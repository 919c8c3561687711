"""Real Celery workers in real processes: start one, wait until it is ready, stop it by PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = " ready."
TEST_TASK_MODULE = "harness.apps.worker_tasks"
SUMMARY_EVENT = "worker_summary"


class WorkerProcess:
    """One worker process (``celery worker`` or ``python -m worker_entry``), logs to a file."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @classmethod
    def celery(
        cls,
        env: Mapping[str, str],
        log_path: Path,
        *,
        hostname: str = "worker1@%h",
        concurrency: int = 2,
        pool: str = "prefork",
        extra_args: Sequence[str] = (),
    ) -> WorkerProcess:
        command = [
            sys.executable, "-m", "celery", "-A", "vividly_tasks", "worker",
            "--include", TEST_TASK_MODULE, "--hostname", hostname,
            "--concurrency", str(concurrency), "--pool", pool, "--loglevel", "INFO",
            *extra_args,
        ]
        return cls(command, env, log_path)

    @classmethod
    def entrypoint(
        cls,
        env: Mapping[str, str],
        log_path: Path,
        *,
        mode: str = "job",
        concurrency: int = 2,
        hostname: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> WorkerProcess:
        """``python -m worker_entry MODE`` with the test tasks, as Cloud Run would run it."""
        command = [
            sys.executable, "-m", "worker_entry", mode, "--include", TEST_TASK_MODULE,
            "--concurrency", str(concurrency),
            *(["--hostname", hostname] if hostname else []), *extra_args,
        ]
        return cls(command, env, log_path)

    def json_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def summary(self) -> dict[str, Any]:
        """The entrypoint's one summary line, parsed (fails if there is not exactly one)."""
        records = [r for r in self.json_records() if r.get("event") == SUMMARY_EVENT]
        assert len(records) == 1, f"expected one summary line:\n{self.logs()[-4000:]}"
        return records[0]

    def start(self) -> WorkerProcess:
        # The repository first, then what the caller's env adds (a benchmark's call recorder).
        python_path = os.pathsep.join(p for p in (str(REPO_ROOT), self.env.get("PYTHONPATH")) if p)
        env = {**self.env, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                self.command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, predicate: Callable[[str], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.logs()):
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.process.returncode}:\n{self.logs()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"worker log never matched:\n{self.logs()[-4000:]}")
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 60.0) -> WorkerProcess:
        self.wait_for_log(lambda text: READY_MARKER in text, timeout)
        return self

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None, "worker not started"
        return self.process.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """Warm shutdown (SIGTERM), then SIGKILL of the whole group if it overstays."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill_group()
        return self.process.returncode

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool children; they share the session we gave them."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def pubsub_transport_landed() -> bool:
    try:
        import vividly_tasks.transport  # noqa: F401
    except ImportError:
        return False
    return True


def broker_params(
    *names: str, pubsub_xfail: str | None = None, run_xfail: bool = True
) -> list[Any]:
    """``pytest.param`` per broker name; Pub/Sub is skipped until its transport imports.

    ``pubsub_xfail`` names a known transport defect that the Pub/Sub variant exposes
    (``run_xfail=False``: do not spend the test's timeouts on it until it is fixed).
    """
    marks: dict[str, list[Any]] = {name: [] for name in names}
    if "pubsub" in marks:
        if not pubsub_transport_landed():
            marks["pubsub"].append(pytest.mark.skip(reason="transport not landed"))
        elif pubsub_xfail:
            marks["pubsub"].append(
                pytest.mark.xfail(reason=pubsub_xfail, strict=False, run=run_xfail)
            )
    return [pytest.param(name, id=name, marks=marks[name]) for name in names]
