"""Start-up is bounded where the metadata server's address drops packets.

A worker whose configuration needs Application Default Credentials (here the google narrator)
and has none looks, last, at the Compute Engine metadata server. Off Google Cloud that address
may swallow packets: google-auth alone then takes 3 attempts of 3 s, plus backoff, before it
says "no credentials" (13.1 s measured). The probe is pointed (``GCE_METADATA_IP``) at a
loopback socket that accepts connections and never answers, and the check, then a real
``vividly-worker job``, must give up within ``CREDENTIALS_CHECK_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.content import ContentEnv, pubsub_sqlite_env
from harness.workers import WorkerProcess
from vividly_tasks.lessons.credentials import CREDENTIALS_CHECK_TIMEOUT_SECONDS
from vividly_tasks.lessons.services import missing_configuration
from vividly_tasks.lessons.settings import Settings
from worker_entry.exit_codes import RET_CONFIG

#: What the measurement may add to the bound on a loaded 2-core machine.
SLACK_SECONDS = 1.0


@pytest.fixture
def silent_metadata_server() -> Iterator[str]:
    """``host:port`` of a socket that completes connections (the kernel does, up to its
    backlog) and never reads or answers: a request to it waits until its timeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                   silent_metadata_server: str) -> str:
    """Neither a key file nor gcloud's credentials: only the metadata server is left."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("NO_GCE_CHECK", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("GCE_METADATA_IP", silent_metadata_server)
    return silent_metadata_server


def test_the_credentials_check_gives_up_on_a_silent_metadata_server_within_its_bound(
    no_credentials: str,
) -> None:
    started = time.monotonic()
    missing = missing_configuration(Settings(CONTENT_NARRATOR="google"))
    elapsed = time.monotonic() - started

    assert elapsed < CREDENTIALS_CHECK_TIMEOUT_SECONDS + SLACK_SECONDS, elapsed
    (reason,) = missing
    assert reason.startswith("Application Default Credentials for Cloud Text-to-Speech")
    assert f"the metadata server at {no_credentials} did not answer within" in reason
    assert "GOOGLE_APPLICATION_CREDENTIALS" in reason


@pytest.fixture
def content_env(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[ContentEnv]:
    yield from pubsub_sqlite_env(request, redis_url, tmp_path, monkeypatch)


def test_a_worker_without_credentials_off_google_cloud_exits_78_within_the_bound(
    content_env: ContentEnv, start_entrypoint: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Against a worker refused at once (a key file that is not there: no probe), the silent
    metadata server adds no more than the bound."""
    monkeypatch.setenv("CONTENT_NARRATOR", "google")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    at_once = start_entrypoint()
    assert at_once.wait(timeout=60) == RET_CONFIG, at_once.logs()[-3000:]
    baseline = time.monotonic() - at_once.started_at

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.delenv("NO_GCE_CHECK", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("GCE_METADATA_IP", address)
        probing = start_entrypoint()
        assert probing.wait(timeout=60) == RET_CONFIG, probing.logs()[-3000:]
        elapsed = time.monotonic() - probing.started_at

    summary = probing.summary()
    assert (summary["exit_reason"], summary["received"]) == ("bad_configuration", 0)
    assert f"the metadata server at {address} did not answer within" in summary["detail"]
    assert elapsed - baseline < CREDENTIALS_CHECK_TIMEOUT_SECONDS + SLACK_SECONDS + 1.0, (
        f"{elapsed:.1f} s against {baseline:.1f} s without the probe")


def test_a_worker_storing_on_gcs_without_credentials_exits_78_within_the_bound(
    content_env: ContentEnv, start_entrypoint: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch, no_credentials: str,
) -> None:
    """Opening the GCS storage at start looks for the same credentials, under the same bound
    (no emulator here, so the client needs real ones)."""
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("STORAGE_URL", "gs://vividly-artifacts/lessons")
    worker = start_entrypoint()
    assert worker.wait(timeout=60) == RET_CONFIG, worker.logs()[-3000:]
    summary = worker.summary()
    assert summary["exit_reason"] == "bad_configuration"
    assert "content database or storage unusable: CredentialsNotFound" in summary["detail"]
    assert f"the metadata server at {no_credentials} did not answer within" in summary["detail"]
    assert f"gave up after {CREDENTIALS_CHECK_TIMEOUT_SECONDS:g} s" in worker.logs()
