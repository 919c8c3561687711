"""Session fixtures that start real services, and per-test fixtures that isolate their state.

A service that cannot start here skips its tests with the reason, except when ``CI`` is set:
then it fails the run, so a green CI always means the real services were exercised.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from harness.required import require_service
from harness.services import (
    PostgresCluster,
    ServiceProcess,
    start_gcs_emulator,
    start_postgres,
    start_pubsub_emulator,
    start_redis,
)
from harness.workers import WorkerProcess
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.settings import variables

T = TypeVar("T")
PRODUCT_ENV_VARS = sorted({*variables(Settings), *variables(DispatchSettings)})
_redis_databases = itertools.count(1)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def pubsub_emulator(services_dir: Path) -> Iterator[ServiceProcess]:
    service = require_service(lambda: start_pubsub_emulator(services_dir))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[ServiceProcess]:
    service = require_service(lambda: start_redis(services_dir))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = require_service(start_postgres)
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's configuration; each gets its own data directory."""
    for name in [*PRODUCT_ENV_VARS, "PUBSUB_EMULATOR_HOST", "CELERY_BROKER_URL",
                 "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VIVIDLY_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def pubsub_project(pubsub_emulator: ServiceProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh project id on the shared emulator: isolates topics and subscriptions per test."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{pubsub_emulator.port}")
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_url(redis_server: ServiceProcess) -> str:
    """A Redis database of this test's own, emptied first."""
    url = f"redis://127.0.0.1:{redis_server.port}/{next(_redis_databases)}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A database of this test's own on the session's private cluster."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = postgres_cluster.url.replace("postgresql+psycopg", "postgresql")
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.OperationalError:  # still starting up
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return postgres_cluster.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def ledger(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """Where the test tasks record each run (harness.apps.worker_tasks), read back by the test."""
    monkeypatch.setenv("TEST_LEDGER_URL", redis_url)
    client: redis.Redis = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def process_starter(
    tmp_path: Path, make: Callable[..., WorkerProcess], log_name: str
) -> Iterator[Callable[..., WorkerProcess]]:
    """Yield a function that starts processes with this test's environment; stop them after."""
    started: list[WorkerProcess] = []

    def start(**kwargs: Any) -> WorkerProcess:
        log_path = tmp_path / f"{log_name}-{len(started) + 1}.log"
        worker = make(dict(os.environ), log_path, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``celery worker`` processes; all are stopped at the end."""
    yield from process_starter(tmp_path, WorkerProcess.celery, "worker")


@pytest.fixture(scope="session")
def gcs_emulator(services_dir: Path) -> Iterator[ServiceProcess]:
    service = require_service(lambda: start_gcs_emulator(services_dir))
    yield service
    service.stop()


@pytest.fixture
def gcs_storage_url(gcs_emulator: ServiceProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """``gs://BUCKET/PREFIX`` on the emulator, with a bucket of this test's own."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{gcs_emulator.port}")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client = storage.Client()
    client.create_bucket(bucket)
    client.close()
    return f"gs://{bucket}/lessons"


@pytest.fixture
def broker(request: pytest.FixtureRequest, ledger: redis.Redis, redis_url: str,
           monkeypatch: pytest.MonkeyPatch) -> str:
    """The broker named by the test's ``broker`` parameter (harness.workers.broker_params).

    ``redis`` and ``pubsub`` set ``BROKER_URL``; ``embedded`` leaves it unset (Kombu's
    filesystem broker under the test's data directory). Results go to the test's Redis.
    """
    name: str = getattr(request, "param", "redis")
    if name == "redis":
        monkeypatch.setenv("BROKER_URL", redis_url)
    elif name == "pubsub":
        monkeypatch.setenv("BROKER_URL", f"pubsub://{request.getfixturevalue('pubsub_project')}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    return name


@pytest.fixture
def start_entrypoint(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``python -m worker_entry`` processes (WorkerProcess.entrypoint); stopped at the end."""
    yield from process_starter(tmp_path, WorkerProcess.entrypoint, "entrypoint")
