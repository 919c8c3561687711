"""Real services for the tests, each started on a free loopback port and stopped by its PID.

Every service runs in its own session (process group), so stopping it also stops what its
launcher started (the Pub/Sub emulator's launcher is a shell script that runs Java).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The testing kit's own: one copy of how a loopback server is started, found and stopped.
from vividly_tasks.testing.emulator import (
    ServiceProcess,
    ServiceUnavailable,
    free_port,
    port_accepts,
    start_pubsub_emulator,
)

POSTGRES_BIN_DIRS = tuple(Path("/usr/lib/postgresql").glob("*/bin"))

__all__ = ["ServiceProcess", "ServiceUnavailable", "free_port", "port_accepts",
           "start_pubsub_emulator"]


def start_redis(workdir: Path) -> ServiceProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    service = ServiceProcess(
        "redis",
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--databases", "1024",
            "--dir", str(workdir),
        ],
        port,
        workdir / "redis.log",
    )
    service.start()
    return service


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster in a temporary directory, never a system database."""

    service: ServiceProcess
    directory: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.service.port}/postgres"

    def stop(self) -> None:
        self.service.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PostgresCluster:
    bin_dir = next((d for d in sorted(POSTGRES_BIN_DIRS, reverse=True) if (d / "initdb").exists()),
                   None)
    if bin_dir is None:
        raise ServiceUnavailable("PostgreSQL server binaries (initdb, postgres) are not installed")
    # initdb refuses to run as root: run the cluster as the postgres user, in a directory it owns
    # (pytest's own tmp directories are private to root).
    user = "postgres" if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="vividly-pg-"))
    if user:
        shutil.chown(directory, user=user)
    data = directory / "data"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True, user=user,
    )
    port = free_port()
    service = ServiceProcess(
        "postgres",
        [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}",
         "-c", "fsync=off", "-c", "full_page_writes=off"],
        port,
        directory / "postgres.log",
        user=user,
    )
    if user:
        service.log_path.touch()
        shutil.chown(service.log_path, user=user)
    service.start()
    return PostgresCluster(service, directory)


def start_gcs_emulator(workdir: Path) -> ServiceProcess:
    """The Cloud Storage emulator from PyPI (``gcp-storage-emulator``), in memory."""
    binary = Path(sys.executable).with_name("gcp-storage-emulator")
    if not binary.exists():
        found = shutil.which("gcp-storage-emulator")
        if found is None:
            raise ServiceUnavailable(
                "gcp-storage-emulator is not installed (PyPI package, in the test extra)"
            )
        binary = Path(found)
    port = free_port()
    service = ServiceProcess(
        "gcs-emulator",
        [str(binary), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        port,
        workdir / "gcs-emulator.log",
    )
    service.start()
    return service
