"""The local runner: a launch starts ``vividly-worker job`` processes on this machine instead
of a Cloud Run execution (a VM without Cloud Run, and the whole loop on the emulator).

One launch of N tasks is N processes, like an execution's N tasks; each drains the queue and
exits on idle as a Cloud Run task would. Their output goes to one log file per process under
``log_dir``.

What the runner reports is what it knows, as the Run API reports executions:

- **Names** are unique across processes and restarts (``local-<UTC time>-<random>``), so two
  dispatchers never share an execution name, a record entry or a log file.
- **State** lives in ``<name>.json`` beside the logs: the task processes' ids, and for each
  task that exited its exit code and time, written by a thread of the dispatcher that
  started it the moment the process exits. Any runner on the machine lists every execution
  from these files: a task with an exit is finished (with when and how); one without is
  running while its process exists. A task whose dispatcher died before it exited is
  finished once its process is gone, with no exit time: it proves nothing (its state says
  ``succeeded: false``).
- Finished executions are listed for ``retention_seconds`` after their end, then their state
  file is removed (their logs stay).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vividly_tasks.dispatch.inputs import ExecutionStates, FinishedExecution, RunningExecution

logger = logging.getLogger(__name__)

#: ``vividly-worker job`` of this interpreter's installation.
WORKER_COMMAND = (sys.executable, "-m", "worker_entry", "job")
#: Finished executions stay listed this long (the dispatcher's record keeps launches an hour).
RETENTION_SECONDS = 3600.0


def execution_name(now: float) -> str:
    """A name no other process or restart produces (time to the second, 48 random bits)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"local-{stamp}-{secrets.token_hex(6)}"


class LocalRunner:
    """Starts ``vividly-worker job`` processes and reports every execution's state."""

    def __init__(self, *, log_dir: Path, command: Sequence[str] = WORKER_COMMAND,
                 env: dict[str, str] | None = None,
                 retention_seconds: float = RETENTION_SECONDS) -> None:
        self.log_dir = log_dir
        self.command = tuple(command)
        self.env = env
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        #: Every process started, for tests and for ``wait``.
        self.started: list[subprocess.Popen[bytes]] = []

    def executions(self) -> ExecutionStates:
        running: list[RunningExecution] = []
        finished: list[FinishedExecution] = []
        now = time.time()
        for path in sorted(self.log_dir.glob("local-*.json")):
            state = _read_state(path)
            if state is None:
                continue
            tasks = state["tasks"]
            alive = sum(1 for task in tasks
                        if task.get("exit_code") is None and _process_exists(task["pid"]))
            if alive:
                running.append(RunningExecution(state["name"], len(tasks), alive))
                continue
            exits = [task.get("finished_at") for task in tasks]
            known = [t for t in exits if t is not None]
            finished_at = max(known) if known else state["launched_at"]
            if finished_at < now - self.retention_seconds:
                path.unlink(missing_ok=True)
                continue
            succeeded = len(known) == len(tasks) and all(
                task.get("exit_code") == 0 for task in tasks)
            finished.append(FinishedExecution(state["name"], finished_at, succeeded,
                                              started_at=state["launched_at"]))
        return ExecutionStates(running, finished)

    def launch(self, task_count: int) -> str:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        launched_at = time.time()
        name = execution_name(launched_at)
        processes = []
        for index in range(task_count):
            # "x": a name that exists already is a bug, not a log to append to.
            log = open(self.log_dir / f"{name}-task-{index}.log", "xb")  # noqa: SIM115
            with log:  # the child keeps its own descriptor
                processes.append(subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, env=self._task_env(name, index, task_count),
                ))
        state: dict[str, Any] = {
            "name": name, "launched_at": launched_at,
            "tasks": [{"pid": p.pid, "exit_code": None, "finished_at": None}
                      for p in processes],
        }
        with self._lock:
            _write_state(self.log_dir / f"{name}.json", state)
            self.started.extend(processes)
        for index, process in enumerate(processes):
            threading.Thread(target=self._reap, args=(name, state, index, process),
                             name=f"reap-{name}-{index}", daemon=True).start()
        logger.info("local runner started %s: %d worker process(es)", name, task_count,
                    extra={"execution": name, "pids": [p.pid for p in processes]})
        return name

    def _reap(self, name: str, state: dict[str, Any], index: int,
              process: subprocess.Popen[bytes]) -> None:
        """Wait for one task's process and write its exit, as soon as it happens: the exit
        time is what proves the queue was drained (see ``decision``)."""
        code = process.wait()
        finished_at = time.time()
        with self._lock:
            state["tasks"][index].update(exit_code=code, finished_at=finished_at)
            _write_state(self.log_dir / f"{name}.json", state)

    def _task_env(self, name: str, index: int, count: int) -> dict[str, str] | None:
        if self.env is None:
            return None
        # Cloud Run's own variables, so the worker's summary names the execution and task.
        return {**self.env, "CLOUD_RUN_EXECUTION": name, "CLOUD_RUN_TASK_INDEX": str(index),
                "CLOUD_RUN_TASK_COUNT": str(count)}

    def wait(self, timeout_seconds: float) -> None:
        """Wait for every process started, and for its exit to be written (tests, and
        ``serve`` at its end)."""
        deadline = time.monotonic() + timeout_seconds
        for process in self.started:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker process %d still runs", process.pid)
        for thread in threading.enumerate():
            if thread.name.startswith("reap-local-"):
                thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        logger.warning("local runner: unreadable execution state %s; ignored", path)
        return None
    return state if isinstance(state, dict) and isinstance(state.get("tasks"), list) else None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    # Write then rename: a runner in another process never reads half a file.
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    partial.write_text(json.dumps(state))
    partial.replace(path)


def _process_exists(pid: int) -> bool:
    """Whether a process with this id exists (a task whose dispatcher died: its exit was
    never written). Another process may have taken the id since: it then counts as running
    until it exits, which at worst delays a launch, never loses one."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True
