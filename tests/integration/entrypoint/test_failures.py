"""When the worker cannot work at all it says why in one line and exits non-zero.

A broker that stays unreachable (a bounded retry, then a reason) and bad configuration, over
Redis and Pub/Sub; plus the flags-over-environment rule of the command line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from harness.services import free_port
from harness.workers import REPO_ROOT, WorkerProcess, broker_params
from worker_entry.exit_codes import RET_CONFIG, RET_CONNECT


@pytest.mark.parametrize("broker", broker_params("redis", "pubsub"), indirect=True)
def test_unreachable_broker_exits_non_zero_with_a_reason_within_30_s(
    broker: str, start_entrypoint: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead_port = free_port()
    if broker == "redis":
        monkeypatch.setenv("BROKER_URL", f"redis://127.0.0.1:{dead_port}/0")
    else:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{dead_port}")
    worker = start_entrypoint()  # the default connection timeout, as deployed

    assert worker.wait(timeout=40) == RET_CONNECT
    assert time.monotonic() - worker.started_at < 30
    summary = worker.summary()
    assert summary["exit_reason"] == "broker_unreachable"
    assert summary["exit_code"] == RET_CONNECT
    assert "not reachable within" in summary["detail"]
    if broker == "redis":
        assert str(dead_port) in summary["detail"]


@pytest.mark.parametrize(
    ("env", "args", "named"),
    [
        ({"WORKER_IDLE_TIMEOUT": "-1"}, [], "WORKER_IDLE_TIMEOUT"),
        ({"WORKER_MAX_TASKS": "lots"}, [], "WORKER_MAX_TASKS"),
        ({}, ["--max-tasks", "0"], "WORKER_MAX_TASKS"),
        ({"BROKER_URL": "nosuchscheme://x"}, [], "nosuchscheme"),
    ],
)
def test_bad_configuration_exits_non_zero_naming_the_setting(
    env: dict[str, str], args: list[str], named: str,
    start_entrypoint: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    worker = start_entrypoint(extra_args=args)
    assert worker.wait(timeout=30) == RET_CONFIG
    summary = worker.summary()
    assert summary["exit_reason"] == "bad_configuration"
    assert named in summary["detail"]


def test_flags_override_the_environment(
    broker: str, start_entrypoint: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKER_IDLE_TIMEOUT", "600")
    monkeypatch.setenv("WORKER_MAX_RUNTIME", "1")
    worker = start_entrypoint(extra_args=["--max-runtime", "900", "--idle-timeout", "1"])
    assert worker.wait(timeout=30) == 0
    assert worker.summary()["exit_reason"] == "idle"


def test_console_script_and_module_offer_both_modes() -> None:
    script = REPO_ROOT / ".venv" / "bin" / "vividly-worker"
    commands = [[sys.executable, "-m", "worker_entry", "--help"]]
    if script.exists():
        commands.append([str(script), "--help"])
    for command in commands:
        output = subprocess.run(command, capture_output=True, text=True, check=True,
                                timeout=60, cwd=REPO_ROOT).stdout
        assert "job" in output and "service" in output


def test_an_unreachable_content_database_exits_69_with_the_reason_and_no_password(
    start_entrypoint: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead_port = free_port()
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql+psycopg://vividly:hunter2@127.0.0.1:{dead_port}/vividly"
    )
    worker = start_entrypoint()
    assert worker.wait(timeout=60) == RET_CONNECT
    summary = worker.summary()
    assert summary["exit_reason"] == "startup_refused"
    assert "content database" in summary["detail"]
    assert str(dead_port) in summary["detail"]
    assert "hunter2" not in worker.logs()
