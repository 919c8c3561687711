"""Flower against a Pub/Sub-backed worker: it shows the worker, its queues and a task's progress.

A real Flower process (``celery -A vividly_tasks flower``, basic auth, loopback) and a real
service-mode worker on the Pub/Sub emulator. A text content request is held at its store stage
(harness.apps.content_gate) while the test asks Flower's API for the worker, its queues and the
task's progress, and headless Chromium takes a screenshot of the task's page; then the task
finishes.
"""

from __future__ import annotations

import ast
import base64
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import harness.apps.content_gate  # noqa: F401 - registers the gated+file storage scheme
from harness.required import require_service
from harness.services import ServiceProcess, ServiceUnavailable, free_port
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.requests import submit
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.tasks import GENERATE_CONTENT, send_generate_content

FLOWER_USER, FLOWER_PASSWORD = "operator", "flower-test-secret"
WORKER_NAME = "content@flower-test"
QUEUE = "vividly"
SCREENSHOT_SIZE = (1280, 1000)
CHROMIUM_NAMES = ("chromium", "chromium-browser")


@dataclass
class Flower:
    """A running Flower: its port, and its API read with basic auth."""

    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path)
        token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" \
            else body.decode()

    def status_without_credentials(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code


@pytest.fixture
def flower(pubsub_project: str, monkeypatch: pytest.MonkeyPatch,
           tmp_path: Path) -> Iterator[Flower]:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    port = free_port()
    service = ServiceProcess(
        "flower",
        [sys.executable, "-m", "celery", "-A", "vividly_tasks", "flower",
         "--address=127.0.0.1", f"--port={port}",
         f"--basic-auth={FLOWER_USER}:{FLOWER_PASSWORD}",
         # Inspect replies travel through Pub/Sub: leave them more than the default 1 s.
         "--inspect-timeout=10000"],
        port,
        tmp_path / "flower.log",
    )
    service.start()
    yield Flower(port)
    service.stop()


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ServiceUnavailable("chromium is not installed (Debian package chromium)")


def screenshot(url: str, path: Path) -> None:
    """One headless Chromium screenshot of ``url``, with a profile of its own, offline."""
    binary = require_service(find_chromium)
    with tempfile.TemporaryDirectory(prefix="vividly-chromium-") as profile:
        subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--window-size={SCREENSHOT_SIZE[0]},{SCREENSHOT_SIZE[1]}",
             f"--screenshot={path}", url],
            check=True, capture_output=True, timeout=60,
        )


def assert_real_picture(path: Path) -> None:
    """A PNG of the window's size with a page on it: many colours, no single one dominating."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == SCREENSHOT_SIZE
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) > 50, "the screenshot is nearly blank"
    assert max(count for count, _ in colours) < 0.95 * SCREENSHOT_SIZE[0] * SCREENSHOT_SIZE[1]


def task_progress(info: dict[str, Any]) -> dict[str, Any]:
    """The progress meta that Flower shows as the running task's result."""
    result = ast.literal_eval(info["result"] or "{}")
    assert isinstance(result, dict)
    return result


def test_flower_shows_the_worker_its_queues_and_a_task_in_progress(
    flower: Flower, start_entrypoint: Callable[..., WorkerProcess], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("STORAGE_URL", f"gated+file://{tmp_path / 'artifacts'}?gate={gate}")
    monkeypatch.setenv("PORT", str(free_port()))
    worker = start_entrypoint(
        mode="service", hostname=WORKER_NAME, concurrency=1,
        extra_args=["--include", "harness.apps.content_gate", "--host", "127.0.0.1"],
    ).wait_ready()
    assert flower.status_without_credentials("/api/workers") == 401
    assert flower.status_without_credentials("/") == 401
    # compose.yaml's health check of Flower: the one page served without credentials.
    assert flower.status_without_credentials("/healthcheck") == 200
    # Flower receives the worker's events (its heartbeats) before any task is sent.
    wait_for(lambda: flower.get("/api/workers?status=true").get(WORKER_NAME), 60,
             "Flower to see the worker online through its events", interval=0.2)

    app = create_app()
    services = ContentServices.from_settings(Settings())
    try:
        row = submit(services.repository, functools.partial(send_generate_content, app),
                     topic="Photosynthesis", modality="text", subject="Biology",
                     grade_level="7")
        task_id = str(row.id)

        # The task waits at its store stage: Flower sees it there, from the worker's events.
        def in_progress() -> dict[str, Any] | None:
            try:
                info: dict[str, Any] = flower.get(f"/api/task/info/{task_id}")
            except urllib.error.HTTPError:
                return None  # not seen yet
            if info["state"] != "PROGRESS" or task_progress(info)["stage"] != "store":
                return None
            return info

        info = wait_for(in_progress, 60, "Flower to show the task at its store stage",
                        interval=0.2)
        assert info["name"] == GENERATE_CONTENT and info["worker"] == WORKER_NAME
        assert task_progress(info) == {"request_id": task_id, "status": "generating",
                                       "stage": "store", "progress": 70}
        listed = flower.get("/api/tasks?state=PROGRESS")
        assert listed[task_id]["name"] == GENERATE_CONTENT

        # The worker, asked by name (inspect replies to one destination), with its queue.
        workers = flower.get(f"/api/workers?refresh=true&workername={WORKER_NAME}")
        assert set(workers) == {WORKER_NAME}
        queues = [queue["name"] for queue in workers[WORKER_NAME]["active_queues"]]
        assert queues == [QUEUE]
        active = workers[WORKER_NAME]["active"]
        assert [task["id"] for task in active] == [task_id]
        assert WORKER_NAME in flower.get("/")  # the dashboard's list of workers
        worker_page = flower.get(f"/worker/{WORKER_NAME}")
        assert QUEUE in worker_page and GENERATE_CONTENT in worker_page

        picture = tmp_path / "flower-task.png"
        credentials = f"{FLOWER_USER}:{FLOWER_PASSWORD}@"
        screenshot(f"http://{credentials}127.0.0.1:{flower.port}/task/{task_id}", picture)
        assert_real_picture(picture)
        if os.environ.get("FLOWER_SCREENSHOT_TO"):  # how docs/flower.png was made
            shutil.copyfile(picture, os.environ["FLOWER_SCREENSHOT_TO"])

        gate.touch()
        done = wait_for(
            lambda: (i := flower.get(f"/api/task/info/{task_id}"))["state"] == "SUCCESS" and i,
            60, "Flower to show the task succeeded", interval=0.2,
        )
        assert "'status': 'completed'" in done["result"]
        assert services.repository.get(row.id).status == "completed"  # type: ignore[union-attr]
    finally:
        services.close()
        app.close()
    assert worker.stop() == 0
