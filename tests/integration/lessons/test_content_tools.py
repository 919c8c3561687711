"""A worker that lacks a tool refuses work instead of failing it.

A worker started with video work queued and without ffmpeg (or without espeak-ng, with the
espeak narrator) on its PATH exits 78 with the reason in its summary line before it takes a
message: the request stays ``queued`` and its message on the queue, and a worker that has the
tool then completes it. Over Pub/Sub (emulator), SQLite, a real ``vividly-worker job``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.content import ContentEnv, pubsub_sqlite_env
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.product import VividlyCelery
from vividly_tasks.lessons.tasks import submit_content_request
from worker_entry.exit_codes import RET_CONFIG, RET_OK

TOOLS = ("ffmpeg", "espeak-ng")


@pytest.fixture
def content_env(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[ContentEnv]:
    yield from pubsub_sqlite_env(request, redis_url, tmp_path, monkeypatch,
                                 CONTENT_TTS_WORDS_PER_MINUTE="300")


@pytest.fixture
def app(content_env: ContentEnv) -> Iterator[VividlyCelery]:
    application = create_app()
    yield application
    application.close()


def path_without(program: str, bin_dir: Path) -> str:
    """A PATH holding every tool of the pipeline but ``program``."""
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is not installed (scripts/install-system-packages.sh)"
        if tool != program:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


@pytest.mark.parametrize("missing", TOOLS)
def test_a_worker_without_a_tool_exits_78_and_the_request_waits_for_one_that_has_it(
    missing: str, content_env: ContentEnv, app: VividlyCelery, tmp_path: Path,
    start_entrypoint: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = submit_content_request(app, topic="Volcanoes", modality="video", subject="Geology",
                                 grade_level="6")
    request_id = str(row.id)
    full_path = os.environ["PATH"]

    monkeypatch.setenv("PATH", path_without(missing, tmp_path / "bin"))
    lacking = start_entrypoint(extra_args=["--idle-timeout", "3"])
    assert lacking.wait(timeout=60) == RET_CONFIG, lacking.logs()[-3000:]
    summary = lacking.summary()
    assert (summary["exit_code"], summary["exit_reason"]) == (RET_CONFIG, "bad_configuration")
    assert f"{missing} (" in summary["detail"] and "not on PATH" in summary["detail"]
    assert summary["received"] == 0
    assert content_env.row(request_id).status == "queued"
    assert content_env.broker.waiting() == 1  # still on the queue (and released again)

    monkeypatch.setenv("PATH", full_path)
    equipped = start_entrypoint(extra_args=["--idle-timeout", "3"])
    assert equipped.wait(timeout=120) == RET_OK, equipped.logs()[-3000:]
    wait_for(lambda: content_env.row(request_id).status == "completed", 30,
             "the request to complete on the equipped worker")
    assert content_env.row(request_id).attempts == 1


def test_a_worker_without_credentials_for_the_hosted_model_exits_78_and_the_request_waits(
    content_env: ContentEnv, app: VividlyCelery, tmp_path: Path,
    start_entrypoint: Callable[..., WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = submit_content_request(app, topic="Tides", modality="text")
    monkeypatch.setenv("CONTENT_GENERATOR", "gemini")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    lacking = start_entrypoint(extra_args=["--idle-timeout", "3"])
    assert lacking.wait(timeout=60) == RET_CONFIG, lacking.logs()[-3000:]
    summary = lacking.summary()
    assert (summary["exit_reason"], summary["received"]) == ("bad_configuration", 0)
    assert "Application Default Credentials for Vertex AI" in summary["detail"]
    assert "no-such-key.json" in summary["detail"]
    assert content_env.row(str(row.id)).status == "queued"
    assert content_env.broker.waiting() == 1
