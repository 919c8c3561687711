"""The local runner: a launch starts ``vividly-worker job`` processes on this machine instead
of a Cloud Run execution (a VM without Cloud Run, and the whole loop on the emulator).

One launch of N tasks is N processes, like an execution's N tasks; each drains the queue and
exits on idle as a Cloud Run task would. The processes are this dispatcher's children: it
knows which still run (so ``vividly dispatch serve`` is the local runner's home; a one-shot
``vividly dispatch`` starts them and leaves them running). Their output goes to one log file
per process under ``log_dir``.
"""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from vividly_tasks.dispatch.inputs import RunningExecution

logger = logging.getLogger(__name__)

#: ``vividly-worker job`` of this interpreter's installation.
WORKER_COMMAND = (sys.executable, "-m", "worker_entry", "job")


class LocalRunner:
    """Starts and tracks ``vividly-worker job`` processes."""

    def __init__(self, *, log_dir: Path, command: Sequence[str] = WORKER_COMMAND,
                 env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.command = tuple(command)
        self.env = env
        self._executions: dict[str, list[subprocess.Popen[bytes]]] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        #: Every process started, for tests and for ``stop``.
        self.started: list[subprocess.Popen[bytes]] = []

    def running(self) -> list[RunningExecution]:
        with self._lock:
            listed = []
            for name, processes in list(self._executions.items()):
                alive = sum(1 for process in processes if process.poll() is None)
                if not alive:
                    del self._executions[name]  # reaped: it has finished
                    continue
                listed.append(RunningExecution(name, len(processes), alive))
            return listed

    def launch(self, task_count: int) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"local-execution-{next(self._numbers)}"
        processes = []
        for index in range(task_count):
            log = open(self.log_dir / f"{name}-task-{index}.log", "ab")  # noqa: SIM115
            with log:  # the child keeps its own descriptor
                processes.append(subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self._task_env(name, index, task_count),
                ))
        with self._lock:
            self._executions[name] = processes
            self.started.extend(processes)
        logger.info("local runner started %s: %d worker process(es)", name, task_count,
                    extra={"execution": name, "pids": [p.pid for p in processes]})
        return name

    def _task_env(self, name: str, index: int, count: int) -> dict[str, str] | None:
        if self.env is None:
            return None
        # Cloud Run's own variables, so the worker's summary names the execution and task.
        return {**self.env, "CLOUD_RUN_EXECUTION": name, "CLOUD_RUN_TASK_INDEX": str(index),
                "CLOUD_RUN_TASK_COUNT": str(count)}

    def wait(self, timeout_seconds: float) -> None:
        """Wait for every process started (tests, and ``serve`` at its end)."""
        for process in self.started:
            try:
                process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                logger.warning("worker process %d still runs", process.pid)
