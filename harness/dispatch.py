"""Helpers of the dispatcher tests: ``vividly dispatch serve`` in a process of its own, and
push deliveries as the Pub/Sub emulator (or Pub/Sub) posts them."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from harness.fakes import cloud_run as fake_cloud_run
from harness.fakes import monitoring as fake_monitoring
from harness.fakes.cloud_run import FakeCloudRun
from harness.fakes.monitoring import FakeMonitoring
from harness.workers import REPO_ROOT


@pytest.fixture
def apis() -> Iterator[tuple[FakeMonitoring, FakeCloudRun]]:
    """Loopback Monitoring and Run Admin APIs for ``GOOGLE_CLOUD_PROJECT=proj``."""
    with fake_monitoring.running() as monitoring, fake_cloud_run.running() as cloud_run:
        monitoring.undelivered = 0  # sampled a minute ago: the burst is not in it yet
        yield monitoring, cloud_run


def api_env(apis: tuple[FakeMonitoring, FakeCloudRun]) -> dict[str, str]:
    """The settings of a dispatcher that uses the loopback APIs."""
    monitoring, cloud_run = apis
    return {"GOOGLE_CLOUD_PROJECT": "proj", "DISPATCH_REGION": "europe-west1",
            "DISPATCH_MONITORING_ENDPOINT": monitoring.endpoint,
            "DISPATCH_RUN_ENDPOINT": cloud_run.endpoint}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: The wake-up subscription of the tests' project (``GOOGLE_CLOUD_PROJECT=proj``).
WAKE_UP = "projects/proj/subscriptions/vividly-wake-up"


def push_body(task_id: str, *, eta: str | None = None, subscription: str = WAKE_UP) -> bytes:
    envelope = {"body": "[[], {}, {}]", "headers": {"id": task_id, "eta": eta}}
    return json.dumps({"message": {
        "data": base64.b64encode(json.dumps(envelope).encode()).decode(),
        "messageId": task_id,
        "publishTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }, "subscription": subscription}).encode()


def post(url: str, body: bytes = b"", timeout: float = 30.0, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class DispatchServe:
    """``vividly dispatch serve`` on a loopback port; stopped (SIGTERM, then kill) by ``stop``.
    Its callers are not checked (``DISPATCH_PUSH_AUTH=none``, as the emulator's pushes carry
    no token) unless ``env`` says otherwise. A ``port`` of its own: the same one again after a
    restart (a push subscription names it)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str,
                 port: int | None = None, ready_seconds: float = 30.0) -> None:
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vividly_tasks.cli", "dispatch", "serve",
                 "--host", "127.0.0.1", "--port", str(self.port), *args],
                env={**os.environ, "DISPATCH_PUSH_AUTH": "none", **env}, cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self._wait_ready(ready_seconds)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dispatch serve exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"dispatch serve not ready: {self.log_path.read_text()}")

    def log_records(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def decisions(self) -> list[dict[str, object]]:
        return [r for r in self.log_records() if r.get("event") == "dispatch_decision"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
