"""The content pipeline end to end: real workers in real processes, a real broker, SQLite and
PostgreSQL, ffmpeg/espeak-ng, and storage written the way production writes it.

Every test runs on the (broker, database) pairs of ``harness.content.matrix_params``:
over Pub/Sub (emulator) on SQLite and on PostgreSQL, and over Redis on SQLite.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import harness.apps.content_faults  # noqa: F401 - registers the flaky+file storage scheme
from harness.content import (
    ARTIFACTS_TEXT,
    ARTIFACTS_VIDEO,
    WORKER_INCLUDE,
    ContentEnv,
    check_video,
    configure_broker,
    matrix_params,
)
from harness.services import free_port
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.errors import EnqueueFailed
from vividly_tasks.lessons.product import VividlyCelery
from vividly_tasks.lessons.requests import resubmit, submit
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.storage import INCOMING_DIR, LocalStorage, artifact_key
from vividly_tasks.lessons.tasks import GENERATE_CONTENT, send_generate_content

VIDEO_STAGES = {"narrate", "slides", "encode"}


@pytest.fixture(params=matrix_params())
def content_env(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ContentEnv]:
    broker, database = request.param
    probe = configure_broker(broker, request, redis_url, monkeypatch)
    if database == "postgresql":
        database_url = request.getfixturevalue("postgres_url")
    else:
        database_url = f"sqlite:///{tmp_path / 'content.sqlite'}"
    monkeypatch.setenv("DATABASE_URL", database_url)
    # Short narration and short leases keep the videos and the takeovers quick.
    monkeypatch.setenv("CONTENT_TTS_WORDS_PER_MINUTE", "300")
    monkeypatch.setenv("CONTENT_CLAIM_LEASE_SECONDS", "2")
    monkeypatch.setenv("CONTENT_RETRY_BACKOFF_SECONDS", "1")
    services = ContentServices.from_settings(Settings())
    yield ContentEnv(probe, database, services)
    services.close()


@pytest.fixture
def app() -> Iterator[VividlyCelery]:
    application = create_app()
    yield application
    application.close()


def start_content_worker(
    start_worker: Callable[..., WorkerProcess], **kwargs: Any
) -> WorkerProcess:
    return start_worker(extra_args=WORKER_INCLUDE, **kwargs).wait_ready()


def submit_request(env: ContentEnv, app: VividlyCelery, **fields: str) -> str:
    row = submit(env.services.repository, functools.partial(send_generate_content, app), **fields)
    return str(row.id)


def wait_finished(env: ContentEnv, request_id: str, timeout: float = 90.0) -> None:
    wait_for(
        lambda: env.row(request_id).status in {"completed", "failed"}, timeout,
        f"request {request_id} to finish",
    )


def local_path(env: ContentEnv, request_id: str, name: str) -> Path:
    storage = env.services.storage
    assert isinstance(storage, LocalStorage)
    return storage.root / artifact_key(request_id, name)


def received_count(worker: WorkerProcess, task_id: str) -> int:
    return worker.logs().count(f"Task {GENERATE_CONTENT}[{task_id}] received")


# --- 1, 2, 7: text and video complete; progress visible mid-task ------------------------------
def test_text_and_video_complete_with_progress_visible_mid_task(
    content_env: ContentEnv, app: VividlyCelery, start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_content_worker(start_worker, concurrency=2)
    assert "content database migrated" in worker.logs()
    # The text request goes through the submit task (as `celery call` would send it), the
    # video one through the Python API.
    text_id = app.send_task(
        "vividly.submit_content",
        kwargs={"topic": "Fractions", "modality": "text", "subject": "Mathematics",
                "grade_level": "4"},
    ).get(timeout=30)
    video_id = submit_request(
        content_env, app, topic="Photosynthesis", modality="video", subject="Biology",
        grade_level="7",
    )
    from_db: set[tuple[str, int]] = set()
    from_result: set[tuple[str, int]] = set()

    def video_done() -> bool:
        row = content_env.row(video_id)
        if row.status == "generating" and row.stage:
            from_db.add((row.stage, row.progress))
        meta = app.backend.get_task_meta(video_id)  # one read: state and info together
        if meta["status"] == "PROGRESS":
            from_result.add((meta["result"]["stage"], meta["result"]["progress"]))
        return row.status in {"completed", "failed"}

    wait_for(video_done, 90, "the video request to finish", interval=0.02)
    wait_finished(content_env, text_id)

    text = content_env.row(text_id)
    assert (text.status, text.progress, text.attempts, text.error) == ("completed", 100, 1, None)
    assert set(text.artifacts or {}) == ARTIFACTS_TEXT
    markdown = content_env.services.storage.get_bytes(artifact_key(text_id, "lesson.md")).decode()
    html = content_env.services.storage.get_bytes(artifact_key(text_id, "lesson.html")).decode()
    assert markdown.startswith("# Fractions: a Mathematics lesson")
    assert "## Quiz" in markdown and "## Answers" in markdown and "Grade 4" in markdown
    assert "<h1>Fractions: a Mathematics lesson</h1>" in html
    assert app.AsyncResult(text_id).get(timeout=10)["outcome"] == "completed"

    video = content_env.row(video_id)
    assert (video.status, video.stage, video.progress, video.error) == (
        "completed", "complete", 100, None)
    assert set(video.artifacts or {}) == ARTIFACTS_VIDEO
    manifest = json.loads(local_path(content_env, video_id, "manifest.json").read_text())
    assert manifest["narration"]["engine"] == "espeak-ng"
    check_video(local_path(content_env, video_id, "lesson.mp4"), manifest)

    # Progress was observable while the task ran, from the database and from AsyncResult.
    assert any(0 < percent < 100 for _, percent in from_db), from_db
    assert {stage for stage, _ in from_db} & VIDEO_STAGES, from_db
    assert any(0 < percent < 100 for _, percent in from_result), from_result
    assert {stage for stage, _ in from_result} & VIDEO_STAGES, from_result
    assert app.AsyncResult(video_id).state == "SUCCESS"


# --- 3: the same message delivered twice at once ----------------------------------------------
def test_one_message_delivered_twice_at_once_completes_once(
    content_env: ContentEnv, app: VividlyCelery, start_worker: Callable[..., WorkerProcess],
) -> None:
    workers = [
        start_worker(extra_args=WORKER_INCLUDE, hostname=f"worker{n}@%h", concurrency=1)
        for n in (1, 2)
    ]
    for worker in workers:  # started together, waited for together
        worker.wait_ready()
    row = content_env.services.repository.insert(
        topic="Volcanoes", modality="video", grade_level="5"
    )
    request_id = str(row.id)
    # The same message (same task id) again while the first copy runs, as a redelivery would:
    # the first worker is busy (one process, prefetch 1), so the copy goes to the second.
    app.send_task(GENERATE_CONTENT, args=[request_id], task_id=request_id)
    wait_for(lambda: content_env.row(request_id).status == "generating", 30, "the first claim")
    app.send_task(GENERATE_CONTENT, args=[request_id], task_id=request_id)
    wait_finished(content_env, request_id)
    logs = lambda: "".join(worker.logs() for worker in workers)  # noqa: E731
    wait_for(lambda: f"request {request_id}: delivery noop" in logs(), 30,
             "the second copy to find the request finished")

    final = content_env.row(request_id)
    assert final.status == "completed"
    assert final.attempts == 1, "only one delivery ever held the claim"
    assert logs().count(f"request {request_id} completed") == 1
    assert sum(received_count(worker, request_id) for worker in workers) >= 2
    assert f"request {request_id} is busy" in logs() or logs().count(
        f"request {request_id}: delivery noop") >= 1
    keys = content_env.services.storage.list_keys(request_id)
    assert sorted(keys) == sorted(artifact_key(request_id, n) for n in ARTIFACTS_VIDEO)
    content_env.broker.assert_all_acknowledged(workers)


# --- 4: SIGKILL during the video stage ----------------------------------------------------------
def test_sigkill_during_the_video_stage_is_completed_by_the_redelivery(
    content_env: ContentEnv, app: VividlyCelery, start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONTENT_TTS_WORDS_PER_MINUTE", "220")  # a longer encode to land in
    worker = start_content_worker(start_worker, concurrency=1)
    request_id = submit_request(content_env, app, topic="Plate tectonics", modality="video")

    def in_video_stage() -> str | None:
        row = content_env.row(request_id)
        return row.claimed_by if row.stage in VIDEO_STAGES else None

    holder = wait_for(in_video_stage, 60, "the video stage", interval=0.01)
    host, pid = holder.rsplit(":", 1)
    assert host == socket.gethostname() and int(pid) != worker.pid, "a pool process holds it"
    os.kill(int(pid), signal.SIGKILL)

    # Nothing of the killed attempt is visible in storage: it never reached the store stage.
    assert content_env.services.storage.list_keys(request_id) == []
    wait_finished(content_env, request_id)
    final = content_env.row(request_id)
    assert (final.status, final.attempts) == ("completed", 2)
    manifest = json.loads(local_path(content_env, request_id, "manifest.json").read_text())
    check_video(local_path(content_env, request_id, "lesson.mp4"), manifest)
    storage = content_env.services.storage
    assert isinstance(storage, LocalStorage)
    assert not any((storage.root / INCOMING_DIR).iterdir()), "no temporary file left"
    assert "WorkerLostError" in worker.logs()
    content_env.broker.assert_all_acknowledged([worker])


# --- 5: invalid inputs fail fast, zero retries ---------------------------------------------------
def test_invalid_inputs_fail_fast_with_their_reason_and_no_retry(
    content_env: ContentEnv, app: VividlyCelery, start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_content_worker(start_worker, concurrency=2)
    repository = content_env.services.repository
    rows = {
        "topic is empty": repository.insert(topic="  ", modality="text"),
        "modality 'hologram' is not one of text, video": repository.insert(
            topic="Fractions", modality="hologram"),
        "topic is 500 characters long; the limit is 200": repository.insert(
            topic="t" * 500, modality="video"),
        "subject is 300 characters long": repository.insert(
            topic="Fractions", modality="text", subject="s" * 300),
        "grade level '99' is not K or 1-12": repository.insert(
            topic="Fractions", modality="text", grade_level="99"),
    }
    unknown = [str(uuid.uuid4()), "not-a-uuid"]
    for row in rows.values():
        app.send_task(GENERATE_CONTENT, args=[str(row.id)], task_id=str(row.id))
    for task_id in unknown:
        app.send_task(GENERATE_CONTENT, args=[task_id], task_id=task_id)

    for reason, row in rows.items():
        wait_finished(content_env, str(row.id), timeout=30)
        final = content_env.row(row.id)
        assert final.status == "failed"
        assert final.error == f"invalid request: {reason}" or reason in (final.error or "")
        assert final.attempts == 1
    # The two unknown ids are refused in any order: wait for both lines.
    refusals = [f"unknown request id {unknown[0]}", "request id 'not-a-uuid' is not a UUID"]
    wait_for(lambda: all(line in worker.logs() for line in refusals), 30,
             "both unknown ids to be refused")
    logs = worker.logs()
    for task_id in [*(str(row.id) for row in rows.values()), *unknown]:
        assert received_count(worker, task_id) == 1, f"{task_id} was delivered again"
        assert app.AsyncResult(task_id).state != "RETRY"
    assert "retry" not in logs.lower().replace("retry_", "")
    content_env.broker.assert_all_acknowledged([worker])
    reasons = content_env.broker.dead_letter_reasons()
    if reasons is not None:  # the broker keeps dead letters: every rejected message is there
        assert len(reasons) == len(rows) + len(unknown), reasons
        assert all(f"{GENERATE_CONTENT}: InvalidRequest: " in r for r in reasons), reasons
        assert f"{GENERATE_CONTENT}: InvalidRequest: topic is empty" in reasons


# --- 6: storage failing for the first two attempts ----------------------------------------------
def test_storage_failing_twice_completes_on_the_third_attempt(
    content_env: ContentEnv, app: VividlyCelery, start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("STORAGE_URL", f"flaky+file://{tmp_path / 'flaky'}?failures=2")
    worker = start_content_worker(start_worker, concurrency=1)
    request_id = submit_request(content_env, app, topic="Magnetism", modality="text")
    wait_finished(content_env, request_id, timeout=60)
    final = content_env.row(request_id)
    assert (final.status, final.attempts, final.error) == ("completed", 3, None)
    assert worker.logs().count("transient error, retry") == 2
    assert (tmp_path / "flaky" / request_id / "lesson.md").read_text().startswith("# Magnetism")


def test_storage_failing_every_time_fails_after_the_last_retry(
    content_env: ContentEnv, app: VividlyCelery, start_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("STORAGE_URL", f"flaky+file://{tmp_path / 'flaky'}?failures=100")
    monkeypatch.setenv("CONTENT_MAX_RETRIES", "1")
    worker = start_content_worker(start_worker, concurrency=1)
    request_id = submit_request(content_env, app, topic="Magnetism", modality="text")
    wait_finished(content_env, request_id, timeout=60)
    final = content_env.row(request_id)
    assert (final.status, final.attempts) == ("failed", 2)
    assert final.error is not None and "gave up after retries" in final.error
    assert "injected storage failure" in final.error
    content_env.broker.assert_all_acknowledged([worker])


# --- submit API against a real broker that is down, then up --------------------------------------
def test_a_request_whose_enqueue_failed_is_visible_and_resubmits(
    content_env: ContentEnv, app: VividlyCelery, monkeypatch: pytest.MonkeyPatch,
) -> None:
    good_broker = app.conf.broker_url  # the app reads its settings now, before the change
    # A broker nobody listens on (Redis URL: fails fast on any machine; the send is the same
    # Celery call whatever the broker).
    monkeypatch.setenv("BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    down = create_app()
    try:
        with pytest.raises(EnqueueFailed) as failure:
            submit_request(content_env, down, topic="Tides", modality="text")
    finally:
        down.close()
    row = content_env.row(failure.value.request_id)
    assert row.status == "pending"
    assert row.error is not None and row.error.startswith("enqueue failed")

    queued = resubmit(
        content_env.services.repository, functools.partial(send_generate_content, app),
        str(row.id),
    )
    assert (queued.status, queued.error) == ("queued", None)
    assert app.conf.broker_url == good_broker
    assert content_env.broker.waiting() == 1
