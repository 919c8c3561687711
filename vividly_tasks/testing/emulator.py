"""The Google Pub/Sub emulator as a process of the tests' own: started on a free loopback
port, stopped by its process group (its launcher is a shell script that runs Java).

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


class EmulatorUnavailable(RuntimeError):
    """The emulator is not installed here, or did not start."""


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


def find_launcher() -> str:
    candidates = list(LAUNCHER_CANDIDATES)
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidates.append(str((Path(gcloud).resolve().parent / LAUNCHER_BESIDE_GCLOUD).resolve()))
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise EmulatorUnavailable(
        "the Pub/Sub emulator is not installed (Debian package google-cloud-cli-pubsub-emulator, "
        "or gcloud components install pubsub-emulator)"
    )


@dataclass
class PubSubEmulator:
    """One emulator on ``127.0.0.1:port``, its output in ``log_path``."""

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def host(self) -> str:
        """What ``PUBSUB_EMULATOR_HOST`` is set to for clients of this emulator."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> PubSubEmulator:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [find_launcher(), "--host=127.0.0.1", f"--port={self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not port_accepts(self.port):
            if self.process.poll() is not None:
                raise EmulatorUnavailable(
                    f"the emulator exited with {self.process.returncode} at start "
                    f"(log: {self.log_path})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorUnavailable(f"the emulator did not listen on port {self.port}")
            time.sleep(0.05)
        return self

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
