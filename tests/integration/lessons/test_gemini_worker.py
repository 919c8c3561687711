"""Hosted lesson generation end to end: a real ``vividly-worker job``
over Pub/Sub (emulator) and SQLite, its gemini generator (the real google-genai SDK) calling a
``generateContent`` server on loopback (harness/fakes/gemini.py) that answers per topic, and its
videos narrated by Cloud Text-to-Speech (the real client) on a loopback gRPC server
(harness/fakes/tts.py). Also: an answer that echoes the API key back leaves no trace of it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from click.testing import CliRunner

from harness.content import ARTIFACTS_TEXT, ARTIFACTS_VIDEO, ContentEnv, ffprobe, pubsub_sqlite_env
from harness.fakes.gemini import MODEL_VERSION, FakeGemini
from harness.fakes.tts import Failure, FakeTextToSpeech
from harness.fakes.tts import running as running_tts
from harness.pubsub_helpers import list_subscriptions
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.cli import cli
from vividly_tasks.lessons.narration import PAUSE_AFTER_SECTION_SECONDS
from vividly_tasks.lessons.product import VividlyCelery
from vividly_tasks.lessons.storage import LocalStorage, artifact_key
from vividly_tasks.lessons.tasks import submit_content_request
from vividly_tasks.worker.redaction import MASK
from worker_entry.exit_codes import RET_OK

RETRY_AFTER_SECONDS = 3
#: Shaped like a real key (39 characters), so a masked one cannot pass for a coincidence.
API_KEY = "AIzaSy-test-key-echoed-0123456789abcdef"


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini.running() as server:
        yield server


@pytest.fixture
def tts() -> Iterator[FakeTextToSpeech]:
    with running_tts(seconds_per_char=0.01) as server:
        yield server


@pytest.fixture
def content_env(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch, gemini: FakeGemini,
                tts: FakeTextToSpeech) -> Iterator[ContentEnv]:
    yield from pubsub_sqlite_env(
        request, redis_url, tmp_path, monkeypatch,
        CONTENT_GENERATOR="gemini", GEMINI_API_KEY=API_KEY,
        CONTENT_MODEL_BASE_URL=gemini.base_url, CONTENT_NARRATOR="google",
        CONTENT_GOOGLE_TTS_ENDPOINT=tts.endpoint, CONTENT_RETRY_BACKOFF_SECONDS="1",
        CONTENT_MAX_RETRIES="1",
    )


@pytest.fixture
def app(content_env: ContentEnv) -> Iterator[VividlyCelery]:
    application = create_app()
    yield application
    application.close()


def submit(app: VividlyCelery, topic: str, modality: str = "text", grade: str = "7") -> str:
    row = submit_content_request(app, topic=topic, modality=modality, subject="Science",
                                 grade_level=grade)
    return str(row.id)


def run_job(start_entrypoint: Callable[..., WorkerProcess], idle_seconds: float) -> None:
    worker = start_entrypoint(extra_args=["--idle-timeout", str(idle_seconds)])
    assert worker.wait(timeout=240) == RET_OK, worker.logs()[-4000:]


def stored(env: ContentEnv, request_id: str) -> Path:
    storage = env.services.storage
    assert isinstance(storage, LocalStorage)
    return storage.root / artifact_key(request_id, "x").rpartition("/")[0]


def vividly_status(request_id: str, *options: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "vividly_tasks.cli", "status", request_id, *options],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return result.stdout + result.stderr


def test_text_and_video_lessons_come_from_the_model_and_a_rate_limit_is_waited_out(
    content_env: ContentEnv, app: VividlyCelery, gemini: FakeGemini, tts: FakeTextToSpeech,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    gemini.script("Tides", f"rate_limited:{RETRY_AFTER_SECONDS}", "lesson")
    text_id = submit(app, "Photosynthesis", grade="4")
    video_id = submit(app, "Volcanoes", "video", grade="11")
    limited_id = submit(app, "Tides")
    progress_metas: list[dict[str, Any]] = []

    worker = start_entrypoint(extra_args=["--idle-timeout", "8"])
    process = worker.process
    assert process is not None

    def job_finished() -> bool:
        meta = app.backend.get_task_meta(video_id)
        if meta["status"] == "PROGRESS":
            progress_metas.append(meta["result"])
        return process.poll() is not None

    wait_for(job_finished, 240, "the job to finish", interval=0.05)
    assert worker.wait(timeout=10) == RET_OK, worker.logs()[-4000:]

    for request_id, topic in ((text_id, "Photosynthesis"), (video_id, "Volcanoes"),
                              (limited_id, "Tides")):
        row = content_env.row(request_id)
        assert (row.status, row.error) == ("completed", None), row.error
        markdown = (stored(content_env, request_id) / "lesson.md").read_text()
        assert f"## Server section 1: {topic}" in markdown
        assert f"# {topic}, as the model tells it" in markdown
        assert row.model_name == MODEL_VERSION
        assert row.prompt_tokens > 100 and row.output_tokens > 100
        assert f"model:         {MODEL_VERSION}, {row.prompt_tokens} prompt + " \
               f"{row.output_tokens} output tokens" in vividly_status(request_id)

    # The prompt carried topic and grade band.
    (text_call,) = gemini.calls_about("Photosynthesis")
    assert "Grade 4 (grade band: elementary)" in text_call.prompt
    (video_call,) = gemini.calls_about("Volcanoes")
    assert "Grade 11 (grade band: high)" in video_call.prompt

    # 429, then a retry no sooner than Retry-After, then one lesson: one artifact set.
    limited, retried = gemini.calls_about("Tides")
    assert retried.at - limited.at >= RETRY_AFTER_SECONDS
    limited_row = content_env.row(limited_id)
    assert limited_row.attempts == 2
    assert sorted(p.name for p in stored(content_env, limited_id).iterdir()) == sorted(
        ARTIFACTS_TEXT)
    manifest = json.loads((stored(content_env, limited_id) / "manifest.json").read_text())
    assert manifest["generator"] == "gemini" and manifest["model"]["calls"] == 1

    # The video: the model's sections on its slides, timed by the narration.
    video_dir = stored(content_env, video_id)
    assert sorted(p.name for p in video_dir.iterdir()) == sorted(ARTIFACTS_VIDEO)
    manifest = json.loads((video_dir / "manifest.json").read_text())
    assert [s["heading"] for s in manifest["sections"]][1:4] == [
        f"Server section {n}: Volcanoes" for n in (1, 2, 3)]
    assert manifest["narration"]["engine"] == "google:en-US-Standard-C"
    spoken = [request.text for request in tts.requests]
    assert any("Section 1. Volcanoes is explained here by the model" in t for t in spoken)
    pauses = len(manifest["sections"]) * PAUSE_AFTER_SECTION_SECONDS
    assert manifest["narration"]["seconds"] == pytest.approx(tts.total_seconds + pauses,
                                                             abs=0.002)
    probe = ffprobe(video_dir / "lesson.mp4")
    assert len(probe["chapters"]) == len(manifest["sections"]) == 7
    audio = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    assert float(audio["duration"]) == pytest.approx(manifest["narration"]["seconds"], abs=0.1)

    # Flower's view: the PROGRESS meta carried the model and its tokens.
    video_row = content_env.row(video_id)
    with_tokens = [m for m in progress_metas if "prompt_tokens" in m]
    assert with_tokens, progress_metas
    assert with_tokens[-1]["model"] == MODEL_VERSION
    assert with_tokens[-1]["prompt_tokens"] == video_row.prompt_tokens
    assert with_tokens[-1]["output_tokens"] == video_row.output_tokens


def test_an_outage_a_malformed_and_a_blocked_answer_fail_with_the_reason(
    content_env: ContentEnv, app: VividlyCelery, gemini: FakeGemini,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    gemini.script("Overloaded topic", "unavailable")
    gemini.script("Garbled topic", "malformed")
    gemini.script("Forbidden topic", "blocked")
    outage_id = submit(app, "Overloaded topic")
    garbled_id = submit(app, "Garbled topic")
    blocked_id = submit(app, "Forbidden topic")
    run_job(start_entrypoint, idle_seconds=6)

    outage = content_env.row(outage_id)
    assert outage.status == "failed"
    assert outage.error is not None and outage.error.startswith("gave up after retries: ")
    assert "503 UNAVAILABLE" in outage.error
    assert len(gemini.calls_about("Overloaded topic")) == 2  # CONTENT_MAX_RETRIES=1: bounded

    garbled = content_env.row(garbled_id)
    assert garbled.status == "failed" and garbled.error is not None
    assert "gave no valid lesson in 2 calls: not JSON" in garbled.error
    assert garbled.output_tokens > 0  # the useless answers were paid for, and counted

    blocked = content_env.row(blocked_id)
    assert blocked.status == "failed" and blocked.error is not None
    assert "refused the prompt (SAFETY)" in blocked.error
    assert len(gemini.calls_about("Forbidden topic")) == 1

    for request_id, reason in ((outage_id, "503 UNAVAILABLE"), (garbled_id, "not JSON"),
                               (blocked_id, "(SAFETY)")):
        shown = vividly_status(request_id)
        assert "status:        failed" in shown and reason in shown, shown

    reasons = content_env.broker.dead_letter_reasons()
    assert reasons is not None and len(reasons) == 3, reasons
    assert any("gave up after 2 attempts" in r and "503 UNAVAILABLE" in r for r in reasons)
    assert any("not JSON" in r for r in reasons) and any("(SAFETY)" in r for r in reasons)


@contextmanager
def task_events(app: VividlyCelery, project: str) -> Iterator[list[dict[str, Any]]]:
    """Every Celery event the workers send meanwhile (what Flower receives)."""
    seen: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        capture = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        capture.start()
        try:
            wait_for(lambda: any("celeryev" in s for s in list_subscriptions(project)), 10,
                     "the event receiver's subscription")
            yield seen
        finally:
            receiver.should_stop = True
            capture.join(10)


def test_an_api_key_echoed_back_by_the_model_api_reaches_no_log_row_status_or_dead_letter(
    content_env: ContentEnv, app: VividlyCelery, gemini: FakeGemini, redis_url: str,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    """The model API answers 503, then 400, each time quoting the request's headers with its
    ``x-goog-api-key``: the retry and the final failure pass the text through the worker's log,
    the request's ``error`` column, the result backend, the task events (Flower's view) and the
    dead-letter reason, and it shows in ``vividly status``. The echo is in each of them, the
    key in none."""
    gemini.script("Echoed topic", "echo_headers:503", "echo_headers:400")
    request_id = submit(app, "Echoed topic")
    assert content_env.broker.project is not None
    with task_events(app, content_env.broker.project) as events:
        worker = start_entrypoint(extra_args=["--idle-timeout", "4"])
        assert worker.wait(timeout=120) == RET_OK, worker.logs()[-4000:]
        wait_for(lambda: {"task-retried", "task-failed"} <= {e["type"] for e in events}, 10,
                 "the retry's and the failure's events")

    calls = gemini.calls_about("Echoed topic")
    assert len(calls) == 2  # the 503 was retried; the 400 failed the request
    sent = {name.lower(): value for name, value in calls[0].headers.items()}
    assert sent["x-goog-api-key"] == API_KEY  # the echo carried the real key
    row = content_env.row(request_id)
    assert row.status == "failed" and row.error is not None
    letters = content_env.broker.dead_letter_messages()
    assert len(letters) == 1
    with redis.Redis.from_url(redis_url) as client:
        stored = [client.get(key) or b"" for key in client.keys("celery-task-meta-*")]
    where = {
        "worker log": worker.logs(),
        "error column": row.error,
        "vividly status": vividly_status(request_id),
        "dead letter": json.dumps({**letters[0].message.attributes,
                                   "data": letters[0].message.data.decode()}),
        "result backend": b"".join(stored).decode("latin-1"),
        "task events": json.dumps(events),
    }
    for name, text in where.items():
        assert API_KEY not in text, f"the key reached the {name}"
        assert "x-goog-api-key" in text and MASK in text, f"no masked echo in the {name}"


def test_a_narration_failure_resumes_at_the_narration_and_never_calls_the_model_again(
    content_env: ContentEnv, app: VividlyCelery, gemini: FakeGemini, tts: FakeTextToSpeech,
    start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    """Text-to-Speech fails the first attempt's third section: the request says it is
    retrying, when and why (row, ``vividly status``, the progress events Flower shows); the
    retry uses the lesson and the two sections that attempt kept, so the model is called (and
    paid) once, each section is spoken once, and the manifest's tokens are the row's."""
    spoken_before_failure = 2
    # A rate limit asking for RETRY_AFTER_SECONDS: the wait is long enough to look at.
    tts.fail_at(spoken_before_failure + 1, Failure(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "the speech service is down",
        retry_after=RETRY_AFTER_SECONDS))
    request_id = submit(app, "Glaciers", "video")
    waiting: list[tuple[Any, str, dict[str, Any]]] = []
    assert content_env.broker.project is not None
    with task_events(app, content_env.broker.project) as events:
        worker = start_entrypoint(extra_args=["--idle-timeout", "8"])
        process = worker.process
        assert process is not None

        def job_finished() -> bool:
            row = content_env.row(request_id)
            if row.status == "retrying" and not waiting:
                # In this process: a CLI start-up takes seconds on a loaded machine.
                shown = CliRunner().invoke(cli, ["status", request_id, "--no-wait"]).stdout
                as_json = CliRunner().invoke(cli, ["status", request_id, "--json"]).stdout
                waiting.append((row, shown, json.loads(as_json)))
            return process.poll() is not None

        wait_for(job_finished, 240, "the job to finish", interval=0.05)
        assert worker.wait(timeout=10) == RET_OK, worker.logs()[-4000:]
        # The worker sends its events in order: the retry's progress came before this one.
        wait_for(lambda: any(e["type"] == "task-succeeded" for e in events), 10,
                 "the task's success event")

    row = content_env.row(request_id)
    assert (row.status, row.error, row.attempts) == ("completed", None, 2), row.error
    assert len(gemini.calls_about("Glaciers")) == 1, "the retry called the model again"
    manifest = json.loads((stored(content_env, request_id) / "manifest.json").read_text())
    assert manifest["model"] == {
        "name": MODEL_VERSION, "calls": 1, "prompt_tokens": row.prompt_tokens,
        "output_tokens": row.output_tokens,
    }
    assert row.model_calls == 1 and row.prompt_tokens > 100
    sections = len(manifest["sections"])
    # Every section spoken once, plus the one call that failed.
    texts = [request.text for request in tts.requests]
    assert len(texts) == sections + 1
    assert texts[spoken_before_failure] == texts[spoken_before_failure + 1]  # asked again
    assert len(set(texts)) == sections
    assert "output tokens (1 call)" in vividly_status(request_id)
    # What the stages kept for the retry is gone once the request completed.
    assert content_env.services.storage.list_keys(f"stages/{request_id}") == []

    # While it waited: retrying, with its due time and the reason.
    assert waiting, "the request was never seen retrying"
    retrying, shown, as_json = waiting[0]
    assert retrying.retry_at is not None
    # (due time computed a moment before the row was written)
    assert retrying.retry_at - retrying.updated_at >= timedelta(seconds=RETRY_AFTER_SECONDS - 0.1)
    assert retrying.error is not None and "the speech service is down" in retrying.error
    assert "status:        retrying (retry due " in shown, shown
    assert "reason:        attempt 1 failed: ServiceUnavailable" in shown, shown
    assert as_json["status"] == "retrying" and "speech service is down" in as_json["error"]
    assert datetime.fromisoformat(as_json["retry_at"]) == retrying.retry_at
    progress = [e for e in events if e["type"] == "task-progress"]
    (announced,) = [e for e in progress if e.get("status") == "retrying"]
    assert "the speech service is down" in announced["error"]
    assert abs(datetime.fromisoformat(announced["retry_at"]) - retrying.retry_at) \
        < timedelta(seconds=1)
    # The retry's progress carried the first attempt's model call and tokens from its start.
    resumed = [e for e in progress if e.get("model_calls")]
    assert resumed[-1]["model_calls"] == 1
    assert (resumed[-1]["prompt_tokens"], resumed[-1]["output_tokens"]) == (
        row.prompt_tokens, row.output_tokens)
