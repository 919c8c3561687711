"""A user's Celery app that flushes something at each prefork child's exit, for
test_exit_hooks.py: the way users flush an exporter, close a pool or write metrics.

Each child writes ``init-PID`` when it starts and, from Celery's ``worker_process_shutdown``,
``shutdown-PID`` after a short "flush" (so a child killed in the middle of its hook leaves no
marker), both in ``EXIT_HOOKS_DIR``. With ``EXIT_HOOKS_HANG_SECONDS`` the hook writes
``hanging-PID`` and then sleeps that long: a hook that hangs (``EXIT_HOOKS_CHILD_SECONDS`` is
how long ``attach`` lets it run under a plain ``celery worker``). The broker comes from Celery's
own ``CELERY_BROKER_URL``; ``EXIT_HOOKS_FOLDER`` puts the app on Kombu's filesystem broker,
which has no event loop (Celery then runs the threaded prefork pool).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

import vividly_tasks.transport  # noqa: F401  (registers pubsub://)
from vividly_tasks.worker import attach

#: The "flush" in the shutdown hook: long enough that cutting it short would show.
FLUSH_SECONDS = 1.0

app = Celery("exit_hooks")
app.conf.update(task_default_queue="exit-hooks", task_acks_late=True)
if os.environ.get("EXIT_HOOKS_FOLDER"):
    folder = os.environ["EXIT_HOOKS_FOLDER"]
    app.conf.update(
        broker_url="filesystem://",
        broker_transport_options={"data_folder_in": folder, "data_folder_out": folder,
                                  "control_folder": folder},
    )
# How long attach's idle pool stop lets the hooks run under a plain ``celery worker``.
attach(app, child_shutdown_seconds=float(os.environ.get("EXIT_HOOKS_CHILD_SECONDS") or 7))


def marker(kind: str) -> Path:
    return Path(os.environ["EXIT_HOOKS_DIR"]) / f"{kind}-{os.getpid()}"


@worker_process_init.connect
def note_start(**_: Any) -> None:
    marker("init").touch()


@worker_process_shutdown.connect
def flush_at_exit(**_: Any) -> None:
    hang_seconds = float(os.environ.get("EXIT_HOOKS_HANG_SECONDS") or 0)
    if hang_seconds:
        marker("hanging").touch()
        time.sleep(hang_seconds)
    time.sleep(FLUSH_SECONDS)
    marker("shutdown").touch()


@app.task(name="exit_hooks.pid")
def pid() -> int:
    return os.getpid()
