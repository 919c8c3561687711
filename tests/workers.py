"""Real Celery workers in real processes: start one, wait until it is ready, stop it by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_MARKER = " ready."
TEST_TASK_MODULE = "tests.worker_tasks"


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

    def start(self) -> WorkerProcess:
        env = {**self.env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
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
