"""The Google Pub/Sub emulator (and any loopback server) as a process of the tests' own:
started on a free loopback port, stopped by its process group (the emulator's launcher is a
shell script that runs Java).

The launcher comes from the Debian package ``google-cloud-cli-pubsub-emulator`` or from
``gcloud components install pubsub-emulator`` (found beside ``gcloud``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LAUNCHER_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
LAUNCHER_BESIDE_GCLOUD = "../platform/pubsub-emulator/bin/cloud-pubsub-emulator"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0


class ServiceUnavailable(RuntimeError):
    """A service could not be found or started on this machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class ServiceProcess:
    """One server process in its own process group, with its output in a log file."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    user: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as ``PUBSUB_EMULATOR_HOST`` takes it."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, user=self.user,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not port_accepts(self.port):
            if self.process.poll() is not None:
                raise ServiceUnavailable(
                    f"{self.name} exited with {self.process.returncode} at start; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceUnavailable(f"{self.name} did not listen on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def restart(self) -> None:
        self.stop()
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while port_accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def find_launcher() -> str:
    candidates = list(LAUNCHER_CANDIDATES)
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidates.append(str((Path(gcloud).resolve().parent / LAUNCHER_BESIDE_GCLOUD).resolve()))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServiceUnavailable(
        "the Pub/Sub emulator is not installed (Debian package google-cloud-cli-pubsub-emulator, "
        "or gcloud components install pubsub-emulator)"
    )


def start_pubsub_emulator(workdir: Path) -> ServiceProcess:
    """An emulator on a free loopback port, its log in ``workdir``; ``stop()`` it after."""
    port = free_port()
    service = ServiceProcess("pubsub-emulator", [find_launcher(), "--host=127.0.0.1",
                                                 f"--port={port}"],
                             port, workdir / "pubsub-emulator.log")
    service.start()
    return service
