"""Nothing a user flushes at a prefork child's exit is lost when the worker stops.

Real workers run harness/apps/exit_hooks.py, whose ``worker_process_shutdown`` handler writes a
marker from each child after a short flush: an idle job's exit, a service's SIGTERM and a
plain ``celery worker``'s SIGTERM each leave every child's marker (the idle pool stop ends
the children through their hooks, not by a bare SIGKILL), and a hook that hangs is cut off
at the end of the shutdown grace and named in the log.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from harness.services import free_port
from harness.workers import WorkerProcess, broker_params

APP = "harness.apps.exit_hooks"
CONCURRENCY = 2


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    directory = tmp_path / "markers"
    directory.mkdir()
    return directory


@pytest.fixture
def app_env(request: pytest.FixtureRequest, markers: Path, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The user app's environment on the broker named by the test's ``broker`` parameter."""
    name: str = getattr(request, "param", "redis")
    if name == "redis":
        monkeypatch.setenv("CELERY_BROKER_URL", request.getfixturevalue("redis_url"))
    elif name == "pubsub":
        monkeypatch.setenv("CELERY_BROKER_URL",
                           f"pubsub://{request.getfixturevalue('pubsub_project')}")
    else:
        folder = tmp_path / "broker"
        folder.mkdir()
        monkeypatch.setenv("EXIT_HOOKS_FOLDER", str(folder))
    monkeypatch.setenv("EXIT_HOOKS_DIR", str(markers))
    return dict(os.environ)


@pytest.fixture
def client(app_env: dict[str, str]) -> Iterator[Celery]:
    """A producer on the same broker as the user app."""
    folder = app_env.get("EXIT_HOOKS_FOLDER")
    app = Celery("exit-hooks-client", broker="filesystem://" if folder else
                 app_env["CELERY_BROKER_URL"])
    app.conf.update(task_default_queue="exit-hooks")
    if folder:
        app.conf.broker_transport_options = {"data_folder_in": folder,
                                             "data_folder_out": folder,
                                             "control_folder": folder}
    yield app
    app.close()


def pids(markers: Path, kind: str) -> set[int]:
    return {int(path.name.split("-")[1]) for path in markers.glob(f"{kind}-*")}


def entrypoint(mode: str, env: dict[str, str], log: Path, *args: str) -> WorkerProcess:
    command = [sys.executable, "-m", "worker_entry", mode, "-A", APP,
               "--concurrency", str(CONCURRENCY), *args]
    return WorkerProcess(command, env, log).start()


def celery_worker(env: dict[str, str], log: Path) -> WorkerProcess:
    command = [sys.executable, "-m", "celery", "-A", APP, "worker",
               "--concurrency", str(CONCURRENCY), "--loglevel", "INFO"]
    return WorkerProcess(command, env, log).start()


def sigterm_when_ready(worker: WorkerProcess, *, exit_within_seconds: float) -> float:
    """SIGTERM once the worker is ready; the seconds it took to exit 0."""
    try:
        worker.wait_ready()
        worker.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        assert worker.wait(exit_within_seconds) == 0, worker.logs()[-4000:]
        return time.monotonic() - sent_at
    finally:
        worker.stop()


def assert_every_child_flushed(markers: Path, worker: WorkerProcess) -> None:
    started = pids(markers, "init")
    assert len(started) == CONCURRENCY, worker.logs()[-3000:]
    assert pids(markers, "shutdown") == started, worker.logs()[-3000:]


@pytest.mark.parametrize("app_env", broker_params("redis", "pubsub", "embedded"),
                         indirect=True)
def test_an_idle_job_exits_zero_after_every_childs_shutdown_hook_ran(
    app_env: dict[str, str], client: Celery, markers: Path, tmp_path: Path
) -> None:
    client.send_task("exit_hooks.pid")
    job = entrypoint("job", app_env, tmp_path / "job.log", "--idle-timeout", "1")
    try:
        assert job.wait(60) == 0, job.logs()[-4000:]
    finally:
        job.stop()
    summary = job.summary()
    assert (summary["exit_reason"], summary["succeeded"]) == ("idle", 1)
    assert_every_child_flushed(markers, job)


@pytest.mark.parametrize("app_env", broker_params("pubsub"), indirect=True)
def test_sigterm_of_a_service_runs_every_childs_shutdown_hook(
    app_env: dict[str, str], markers: Path, tmp_path: Path
) -> None:
    service = entrypoint("service", {**app_env, "PORT": str(free_port())},
                         tmp_path / "service.log")
    sigterm_when_ready(service, exit_within_seconds=10)
    assert service.summary()["exit_reason"] == "sigterm"
    assert_every_child_flushed(markers, service)


@pytest.mark.parametrize("app_env", broker_params("redis"), indirect=True)
def test_sigterm_of_a_celery_worker_with_attach_runs_every_childs_shutdown_hook(
    app_env: dict[str, str], markers: Path, tmp_path: Path
) -> None:
    worker = celery_worker(app_env, tmp_path / "worker.log")
    sigterm_when_ready(worker, exit_within_seconds=15)
    assert_every_child_flushed(markers, worker)


@pytest.mark.parametrize("mode", ["job", "service"])
@pytest.mark.parametrize("app_env", broker_params("pubsub"), indirect=True)
def test_a_hook_that_hangs_is_killed_at_the_end_of_the_grace_and_named(
    mode: str, app_env: dict[str, str], client: Celery, markers: Path, tmp_path: Path
) -> None:
    """An idle job's stop (a cold one) and a service's SIGTERM (a warm one) alike."""
    grace_seconds, margin_seconds = 2.0, 2.0
    client.send_task("exit_hooks.pid")
    env = {**app_env, "EXIT_HOOKS_HANG_SECONDS": "60", "PORT": str(free_port())}
    args = ["--idle-timeout", "1"] if mode == "job" else []
    worker = entrypoint(mode, env, tmp_path / f"{mode}.log", *args,
                        "--shutdown-grace", str(grace_seconds))
    if mode == "job":
        try:
            worker.wait_for_log(lambda text: "worker stopping" in text, timeout=60)
            stopping_at = time.monotonic()
            assert worker.wait(grace_seconds + margin_seconds + 10) == 0, worker.logs()[-4000:]
            stopped_in = time.monotonic() - stopping_at
        finally:
            worker.stop()
    else:  # SIGTERM once the task is done: a busy pool is Celery's own warm stop
        worker.wait_for_log(lambda text: "succeeded" in text, timeout=60)
        stopped_in = sigterm_when_ready(worker, exit_within_seconds=grace_seconds + 10)
    logs = worker.logs()
    # Not the hard exit (grace + 10 s after an idle stop, 9.5 s after SIGTERM): the step's.
    assert stopped_in <= grace_seconds + margin_seconds, (stopped_in, logs[-4000:])
    assert "forced exit" not in logs
    assert worker.summary()["exit_reason"] == ("idle" if mode == "job" else "sigterm")
    assert_every_child_cut_off_and_named(markers, logs)


@pytest.mark.parametrize("app_env", broker_params("redis"), indirect=True)
def test_a_hook_that_hangs_in_a_celery_worker_is_killed_after_child_shutdown_seconds(
    app_env: dict[str, str], markers: Path, tmp_path: Path
) -> None:
    """attach(app, child_shutdown_seconds=1) bounds the hooks where no grace is given."""
    env = {**app_env, "EXIT_HOOKS_HANG_SECONDS": "60", "EXIT_HOOKS_CHILD_SECONDS": "1"}
    worker = celery_worker(env, tmp_path / "worker.log")
    stopped_in = sigterm_when_ready(worker, exit_within_seconds=15)
    assert stopped_in <= 1 + 2.0, (stopped_in, worker.logs()[-4000:])
    assert_every_child_cut_off_and_named(markers, worker.logs())


def assert_every_child_cut_off_and_named(markers: Path, logs: str) -> None:
    """Every child was in its hook, none finished it, each is named, none is left behind."""
    children = pids(markers, "init")
    assert len(children) == CONCURRENCY
    assert pids(markers, "hanging") == children and not pids(markers, "shutdown")
    for pid in children:
        assert f"(pid {pid}) was still in its worker_process_shutdown hooks" in logs, logs
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived its worker"
    assert "harness.apps.exit_hooks.flush_at_exit" in logs
