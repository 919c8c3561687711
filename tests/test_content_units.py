"""The content domain's pure parts, and its database layer on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
import uuid
import wave
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.content_support import DATABASES
from vividly_tasks.lessons import status as machine
from vividly_tasks.lessons.database import ContentDatabase, current_revision
from vividly_tasks.lessons.errors import (
    EnqueueFailed,
    InvalidRequest,
    StorageUnavailable,
    TimeLimitExceeded,
    ToolMissing,
    TransientError,
)
from vividly_tasks.lessons.generator import ModelUsage, OfflineGenerator, report_usage
from vividly_tasks.lessons.lesson import Lesson, render_html, render_markdown
from vividly_tasks.lessons.models import Base, ContentRequest, utcnow
from vividly_tasks.lessons.narration import ENGINE_SILENCE, Voice, narrate
from vividly_tasks.lessons.pipeline import PipelineConfig
from vividly_tasks.lessons.repository import ContentRepository
from vividly_tasks.lessons.requests import resubmit, submit
from vividly_tasks.lessons.runner import ContentRunner, LeaseKeeper
from vividly_tasks.lessons.stages import StageStore, stage_prefix
from vividly_tasks.lessons.status import Stage, Status
from vividly_tasks.lessons.storage import (
    INCOMING_DIR,
    LocalStorage,
    UnsafeKey,
    artifact_key,
    check_key,
    open_storage,
)
from vividly_tasks.lessons.tools import run_tool
from vividly_tasks.lessons.validation import (
    GradeBand,
    LessonSpec,
    Modality,
    parse_grade,
    validate,
)

LIMITS = {"max_topic_chars": 200, "max_field_chars": 100}


# --- the status machine ------------------------------------------------------------------------
def test_the_happy_path_is_allowed_and_terminal_states_are_final() -> None:
    path = [Status.PENDING, Status.QUEUED, Status.GENERATING, Status.COMPLETED]
    for current, target in itertools.pairwise(path):
        machine.check_transition(current, target)
    for terminal in (Status.COMPLETED, Status.FAILED):
        assert machine.is_terminal(terminal)
        for target in Status:
            assert not machine.can_transition(terminal, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.QUEUED, Status.PENDING),
        (Status.GENERATING, Status.QUEUED),
        (Status.GENERATING, Status.PENDING),
        (Status.COMPLETED, Status.GENERATING),
        (Status.FAILED, Status.QUEUED),
        (Status.PENDING, Status.COMPLETED),
        (Status.QUEUED, Status.COMPLETED),
    ],
)
def test_nothing_moves_backwards_or_skips_generation(current: Status, target: Status) -> None:
    with pytest.raises(machine.TransitionError):
        machine.check_transition(current, target)


def test_sources_are_the_guard_of_each_target() -> None:
    assert machine.sources(Status.GENERATING) == {
        Status.PENDING, Status.QUEUED, Status.GENERATING, Status.RETRYING}
    assert machine.sources(Status.RETRYING) == {Status.GENERATING}
    assert machine.sources(Status.COMPLETED) == {Status.GENERATING}
    assert machine.sources(Status.QUEUED) == {Status.PENDING}
    assert Status.COMPLETED not in machine.sources(Status.FAILED)


# --- validation --------------------------------------------------------------------------------
def test_a_valid_request_is_normalised() -> None:
    spec = validate(
        topic="  The   water cycle ", modality="video", subject="Science", grade_level="3rd",
        **LIMITS,
    )
    assert spec.topic == "The water cycle"
    assert spec.modality is Modality.VIDEO
    assert spec.grade == 3 and spec.band is GradeBand.ELEMENTARY
    assert validate(topic="x", modality="text", **LIMITS).subject == "General studies"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"topic": "", "modality": "text"}, "topic is empty"),
        ({"topic": "   ", "modality": "text"}, "topic is empty"),
        ({"topic": None, "modality": "text"}, "topic is empty"),
        ({"topic": "Fractions", "modality": "hologram"}, "modality 'hologram'"),
        ({"topic": "Fractions", "modality": None}, "modality None"),
        ({"topic": "x" * 201, "modality": "text"}, "topic is 201 characters long"),
        ({"topic": "Fractions", "modality": "text", "subject": "s" * 101}, "subject is 101"),
        ({"topic": "Fractions", "modality": "text", "grade_level": "13"}, "not K or 1-12"),
        ({"topic": "Frac\x00tions", "modality": "text"}, "control"),
    ],
)
def test_invalid_requests_say_why(fields: dict[str, str | None], reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        validate(**fields, **LIMITS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "grade"),
    [("K", 0), ("kindergarten", 0), ("1", 1), ("grade 7", 7), ("12th", 12), ("", None)],
)
def test_grade_levels(value: str, grade: int | None) -> None:
    assert parse_grade(value) == grade


# --- the lesson --------------------------------------------------------------------------------
def _lesson(topic: str = "Photosynthesis", grade: str = "7") -> tuple[str, str]:
    spec = validate(topic=topic, modality="text", subject="Biology", grade_level=grade, **LIMITS)
    lesson = OfflineGenerator().generate(spec)
    return render_markdown(lesson), render_html(lesson)


def test_the_offline_lesson_has_every_part() -> None:
    markdown, html = _lesson()
    assert markdown.startswith("# Photosynthesis: a Biology lesson\n")
    for heading in ("What you will learn", "Key ideas", "Worked example", "Quiz", "Answers"):
        assert f"\n## {heading}\n" in markdown
        assert f"<h2>{heading}</h2>" in html
    quiz = markdown.split("## Quiz")[1].split("## Answers")[0]
    answers = markdown.split("## Answers")[1]
    assert quiz.count("\n1. ") == 1 and "\n3. " in quiz and "\n3. " in answers
    assert "Explain what Photosynthesis is" in markdown
    assert "Grade 7" in markdown


def test_lessons_are_worded_for_the_grade_and_deterministic() -> None:
    early, _ = _lesson(grade="K")
    high, _ = _lesson(grade="11")
    assert early != high
    assert _lesson(grade="K") == _lesson(grade="K")


class _TagChecker(HTMLParser):
    VOID = frozenset({"meta"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_well_formed_and_escapes_the_topic() -> None:
    _, html = _lesson(topic="<script>alert(1)</script> & more")
    assert "<script>" not in html
    checker = _TagChecker()
    checker.feed(html)
    assert checker.stack == []
    assert "<script>alert(1)</script> & more" in "".join(checker.text)


# --- storage keys and atomic writes -------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", ".hidden", "a/\x00b",
     "a/b/", "x" * 600, "a b"],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafeKey):
        check_key(key)


def test_artifact_keys_come_from_the_request_id() -> None:
    request_id = uuid.uuid4()
    assert artifact_key(request_id, "lesson.md") == f"{request_id}/lesson.md"
    with pytest.raises(ValueError, match="badly formed"):
        artifact_key("../../etc", "passwd")
    with pytest.raises(UnsafeKey):
        artifact_key(request_id, "../other/lesson.md")


def test_local_storage_cannot_be_led_out_by_a_symlink(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    source = tmp_path / "source.txt"
    source.write_text("x")
    with pytest.raises(UnsafeKey):
        storage.put_file("link/file.txt", source, "text/plain")
    assert not (tmp_path / "outside" / "file.txt").exists()


def test_a_failed_write_leaves_no_file_and_no_leftover(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    missing = tmp_path / "does-not-exist"
    with pytest.raises(StorageUnavailable):
        storage.put_file("req/lesson.md", missing, "text/markdown")
    assert storage.list_keys() == []
    assert not any((tmp_path / "root" / INCOMING_DIR).iterdir())


def test_an_interrupted_write_never_shows_a_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy dies half-way (as a killed process would): the final name never appears."""
    storage = LocalStorage(tmp_path / "root")
    source = tmp_path / "big.bin"
    source.write_bytes(b"v1" * (3 << 20))
    storage.put_file("req/video.mp4", source, "video/mp4")
    source.write_bytes(b"v2" * (3 << 20))
    real_fsync = __import__("os").fsync
    calls = []

    def dying_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError("disk vanished")

    monkeypatch.setattr("vividly_tasks.lessons.storage.os.fsync", dying_fsync)
    with pytest.raises(StorageUnavailable, match="disk vanished"):
        storage.put_file("req/video.mp4", source, "video/mp4")
    monkeypatch.setattr("vividly_tasks.lessons.storage.os.fsync", real_fsync)
    assert calls
    assert (tmp_path / "root" / "req" / "video.mp4").read_bytes() == b"v1" * (3 << 20)
    assert storage.list_keys() == ["req/video.mp4"]
    assert not any((tmp_path / "root" / INCOMING_DIR).iterdir())


def test_storage_urls(tmp_path: Path) -> None:
    local = open_storage((tmp_path / "a").as_uri())
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "a"
    with pytest.raises(ValueError, match="no storage backend"):
        open_storage("s3://bucket/x")


# --- narration: chosen, never a fallback ------------------------------------------------------
def test_the_silent_narrator_times_silence_to_the_reading_length(tmp_path: Path) -> None:
    voice = Voice(narrator="silent", command="no-such-tts-program", words_per_minute=120)
    narration = narrate(["one two three four", "word " * 10], tmp_path, voice,
                        timeout_seconds=30)
    assert narration.engine == ENGINE_SILENCE
    assert narration.section_seconds[0] == pytest.approx(2.0 + 0.4, abs=0.01)
    assert narration.section_seconds[1] == pytest.approx(5.0 + 0.4, abs=0.01)
    with wave.open(str(narration.path)) as clip:
        assert clip.getnframes() / clip.getframerate() == pytest.approx(7.8, abs=0.01)


def test_a_missing_speech_program_is_the_workers_fault_not_silence(tmp_path: Path) -> None:
    voice = Voice(command="no-such-tts-program")
    with pytest.raises(ToolMissing, match="no-such-tts-program is not installed") as raised:
        narrate(["one two three"], tmp_path, voice, timeout_seconds=30)
    assert isinstance(raised.value, TransientError)  # retried, never a permanent failure
    assert not (tmp_path / "narration.wav").exists()


def test_a_tool_that_vanished_mid_run_is_a_transient_failure() -> None:
    with pytest.raises(ToolMissing, match="no-such-encoder is not installed on this worker"):
        run_tool(["no-such-encoder", "-y"], what="video encoding", timeout_seconds=5)


def test_espeak_narration_is_timed_per_section(tmp_path: Path) -> None:
    narration = narrate(["Hello there.", "A second, longer sentence for the second slide."],
                        tmp_path, Voice(), timeout_seconds=30)
    if narration.engine == ENGINE_SILENCE:
        pytest.skip("espeak-ng is not installed")
    assert narration.section_seconds[1] > narration.section_seconds[0] > 0.4
    with wave.open(str(narration.path)) as clip:
        total = clip.getnframes() / clip.getframerate()
    assert total == pytest.approx(narration.total_seconds, abs=0.01)


# --- the database layer, on both databases -----------------------------------------------------
@pytest.fixture(params=DATABASES)
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContentRepository]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'content.sqlite'}"
    database = ContentDatabase(url)
    database.migrate()
    yield ContentRepository(database)
    database.dispose()


def test_migrations_match_the_model_and_rerun_as_no_ops(repository: ContentRepository) -> None:
    engine = repository.database.engine
    repository.database.migrate()
    assert current_revision(engine) == "0006"
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_released_claim_is_retrying_with_its_due_time_until_the_retry_claims_it(
    repository: ContentRepository,
) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    claim = repository.claim(row.id, holder="a", lease_seconds=60)
    assert claim is not None
    due = utcnow() + timedelta(seconds=30)
    assert repository.release(claim, "attempt 1 failed: ServiceUnavailable: down", due)
    waiting = repository.get(row.id)
    assert waiting is not None and waiting.status == Status.RETRYING
    assert waiting.retry_at == due and waiting.claim_token is None
    assert waiting.error == "attempt 1 failed: ServiceUnavailable: down"
    retry = repository.claim(row.id, holder="b", lease_seconds=60)
    assert retry is not None and retry.attempt == 2
    working = repository.get(row.id)
    assert working is not None and (working.status, working.retry_at) == ("generating", None)


def test_the_database_still_refuses_a_status_the_machine_does_not_know(
    repository: ContentRepository,
) -> None:
    """The migration that added ``retrying`` rebuilt the CHECK constraint, not dropped it."""
    row = repository.insert(topic="Fractions", modality="text")
    with pytest.raises(sqlalchemy.exc.IntegrityError), repository.database.session() as session:
        session.execute(sqlalchemy.update(ContentRequest).where(ContentRequest.id == row.id)
                        .values(status="paused"))


def test_one_claim_at_a_time_and_a_stale_claim_is_taken_over(
    repository: ContentRepository,
) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    first = repository.claim(row.id, holder="a", lease_seconds=60)
    assert first is not None and first.attempt == 1
    assert repository.claim(row.id, holder="b", lease_seconds=60) is None
    later = utcnow() + timedelta(seconds=61)
    second = repository.claim(row.id, holder="b", lease_seconds=60, now=later)
    assert second is not None and second.attempt == 2
    assert not repository.set_stage(first, Stage.SCRIPT, 20, 60), "the old holder lost it"
    assert not repository.complete(first, {})
    assert repository.complete(second, {"lesson.md": "file:///x"})
    final = repository.get(row.id)
    assert final is not None and final.status == Status.COMPLETED and final.progress == 100
    assert repository.claim(row.id, holder="c", lease_seconds=60) is None
    assert not repository.fail(row.id, "too late"), "completed is terminal"


def test_a_released_claim_can_be_taken_at_once(repository: ContentRepository) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    claim = repository.claim(row.id, holder="a", lease_seconds=60)
    assert claim is not None
    assert repository.release(claim, "storage down")
    again = repository.claim(row.id, holder="a", lease_seconds=60)
    assert again is not None and again.attempt == 2
    current = repository.get(row.id)
    assert current is not None and current.error == "storage down"


def test_queued_never_overwrites_a_claimed_request(repository: ContentRepository) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    assert repository.claim(row.id, holder="fast-worker", lease_seconds=60)
    assert not repository.mark_queued(row.id)
    current = repository.get(row.id)
    assert current is not None and current.status == Status.GENERATING


def test_a_failed_enqueue_leaves_a_visible_pending_request_that_resubmits(
    repository: ContentRepository,
) -> None:
    sent: list[str] = []

    def broken(request_id: str, modality: str) -> None:
        raise ConnectionError("broker unreachable")

    with pytest.raises(EnqueueFailed) as failure:
        submit(repository, broken, topic="Volcanoes", modality="video", grade_level="5")
    row = repository.get(failure.value.request_id)
    assert row is not None and row.status == Status.PENDING
    assert row.error is not None and "broker unreachable" in row.error
    assert [r.id for r in repository.list_by_status(Status.PENDING)] == [row.id]

    queued = resubmit(repository, lambda rid, _: sent.append(rid), str(row.id))
    assert sent == [str(row.id)]
    assert queued.status == Status.QUEUED and queued.error is None


def test_submit_refuses_invalid_input_before_writing(repository: ContentRepository) -> None:
    with pytest.raises(InvalidRequest, match="topic is empty"):
        submit(repository, lambda *_: None, topic=" ", modality="text")
    assert repository.list_by_status(Status.PENDING) == []


def _runner(repository: ContentRepository, tmp_path: Path, **config: float) -> ContentRunner:
    return ContentRunner(
        repository=repository, storage=LocalStorage(tmp_path / "artifacts"),
        generator=OfflineGenerator(), config=PipelineConfig(**config),  # type: ignore[arg-type]
        work_root=tmp_path / "work", lease_seconds=30,
    )


def test_the_runner_completes_once_and_redelivery_is_a_no_op(
    repository: ContentRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = repository.insert(topic="Magnets", modality="text", grade_level="4")
    runner = _runner(repository, tmp_path)
    seen: list[tuple[str, int]] = []
    with caplog.at_level(logging.INFO, logger="vividly_tasks.lessons.runner"):
        outcome = runner.run(
            str(row.id), progress=lambda _, stage, pct: seen.append((stage, pct))
        )
    assert "(text: encode, narrate, slides skipped)" in caplog.text
    assert outcome.kind == "completed"
    assert seen == [("validate", 0), ("script", 20), ("store", 70), ("complete", 100)]
    assert set(outcome.artifacts) == {"lesson.md", "lesson.html", "manifest.json"}
    assert runner.run(str(row.id)).kind == "noop"
    final = repository.get(row.id)
    assert final is not None and final.attempts == 1
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_an_attempt_past_its_time_limit_fails(
    repository: ContentRepository, tmp_path: Path
) -> None:
    row = repository.insert(topic="Magnets", modality="video")
    runner = _runner(repository, tmp_path, video_time_limit_seconds=0.05)
    with pytest.raises(TimeLimitExceeded):
        runner.run(str(row.id))
    final = repository.get(row.id)
    assert final is not None and final.status == Status.FAILED
    assert final.error is not None and "time limit" in final.error


def test_an_unreachable_database_is_a_transient_error(tmp_path: Path) -> None:
    from tests.services import free_port
    from vividly_tasks.lessons.errors import DatabaseUnavailable, TransientError

    database = ContentDatabase(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    repository = ContentRepository(database)
    with pytest.raises(DatabaseUnavailable) as caught:
        repository.get(uuid.uuid4())
    assert isinstance(caught.value, TransientError)
    with pytest.raises(DatabaseUnavailable):
        _runner(repository, tmp_path).run(str(uuid.uuid4()))
    database.dispose()


def test_the_lease_keeper_renews_a_claim_from_its_thread(repository: ContentRepository) -> None:
    row = repository.insert(topic="Fractions", modality="video")
    claim = repository.claim(row.id, holder="slow-worker", lease_seconds=0.5)
    assert claim is not None
    with LeaseKeeper(repository, claim, lease_seconds=0.5) as keeper:
        time.sleep(1.2)  # more than twice the lease: only renewals keep it
        assert repository.claim(row.id, holder="other", lease_seconds=1) is None
        assert not keeper.lost
    time.sleep(0.6)
    assert repository.claim(row.id, holder="other", lease_seconds=1) is not None, (
        "without renewals the lease runs out and the claim is taken over"
    )


def test_an_unexpected_error_fails_the_request_instead_of_leaving_it_claimed(
    repository: ContentRepository, tmp_path: Path
) -> None:
    from vividly_tasks.lessons.errors import PermanentFailure

    class BrokenGenerator:
        name = "broken"

        def generate(self, spec: object) -> NoReturn:
            raise RuntimeError("boom")

    row = repository.insert(topic="Magnets", modality="text")
    runner = _runner(repository, tmp_path)
    runner.generator = BrokenGenerator()
    with pytest.raises(PermanentFailure, match="internal error: RuntimeError: boom"):
        runner.run(str(row.id))
    final = repository.get(row.id)
    assert final is not None and final.status == Status.FAILED and final.claim_token is None


def test_a_workers_start_sweeps_partial_copies_a_killed_writer_left(tmp_path: Path) -> None:
    import os

    from vividly_tasks.lessons.storage import INCOMING_DIR, LocalStorage

    storage = LocalStorage(tmp_path / "store")
    incoming = storage.root / INCOMING_DIR
    incoming.mkdir(parents=True)
    stale, fresh = incoming / "tmpold.part", incoming / "tmpnew.part"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"half a video")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert storage.sweep_temporaries() == 1  # the fresh one may be a live worker's copy
    assert not stale.exists() and fresh.exists()
    assert storage.list_keys() == []  # neither was ever an artifact


class PaidOfflineGenerator:
    """The offline generator, reporting each lesson as a paid call would (and counting them)."""

    name = "paid-offline"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, spec: LessonSpec) -> Lesson:
        self.calls += 1
        report_usage(ModelUsage("paid-model-1", prompt_tokens=800, output_tokens=700))
        return OfflineGenerator().generate(spec)


def test_an_encode_failure_resumes_at_the_encode_with_what_the_earlier_stages_kept(
    repository: ContentRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = repository.insert(topic="Volcanoes", modality="video")
    runner = _runner(repository, tmp_path, voice=Voice(narrator="silent"))  # type: ignore[arg-type]
    paid = PaidOfflineGenerator()
    runner.generator = paid
    storage = runner.storage
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # ffmpeg gone: the encode fails
    with pytest.raises(ToolMissing, match="ffmpeg"):
        runner.run(str(row.id), retry_delay=lambda exc: 30.0)

    waiting = repository.get(row.id)
    assert waiting is not None and waiting.status == Status.RETRYING
    assert waiting.retry_at is not None and waiting.error is not None
    assert 29 < (waiting.retry_at - utcnow()).total_seconds() <= 30
    assert "ffmpeg" in waiting.error and waiting.stage == "encode"
    kept = [key.rpartition("/")[2] for key in storage.list_keys(stage_prefix(row.id))]
    sections = 5
    assert "lesson.json" in kept
    assert sum(name.startswith("narration-") for name in kept) == sections
    assert sorted(name for name in kept if name.startswith("slide-")) == [
        f"slide-{n:02d}.png" for n in range(1, sections + 1)]
    assert storage.list_keys(str(row.id)) == []  # no artifact before the store stage

    monkeypatch.setenv("PATH", path)
    stages: list[str] = []
    spent: list[ModelUsage] = []
    outcome = runner.run(str(row.id), progress=lambda _, stage, __: stages.append(stage),
                         usage=lambda _, usage: spent.append(usage))
    assert outcome.kind == "completed"
    assert paid.calls == 1, "the retry wrote the lesson again"
    final = repository.get(row.id)
    assert final is not None and final.attempts == 2 and final.retry_at is None
    assert (final.model_calls, final.prompt_tokens, final.output_tokens) == (1, 800, 700)
    assert spent == [ModelUsage("paid-model-1", 800, 700, calls=1)]  # told at the start
    manifest = json.loads(storage.get_bytes(artifact_key(row.id, "manifest.json")))
    assert manifest["generator"] == "paid-offline"
    assert manifest["model"] == {"name": "paid-model-1", "calls": 1, "prompt_tokens": 800,
                                 "output_tokens": 700}
    assert storage.list_keys(stage_prefix(row.id)) == [], "the kept stages outlived the request"


def test_a_section_already_spoken_is_not_spoken_again(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    kept = StageStore(storage, uuid.uuid4(), tmp_path)
    texts = ["First section.", "Second section.", "Third section."]
    first = narrate(texts, tmp_path, Voice(narrator="silent"), timeout_seconds=30, kept=kept)
    storage.delete(storage.list_keys()[1])  # as if the second section's call had failed

    spoken: list[str] = []

    class Recording:
        def load_clip(self, index: int, text: str, engine: str) -> bytes | None:
            frames = kept.load_clip(index, text, engine)
            if frames is None:
                spoken.append(text)
            return frames

        def keep_clip(self, index: int, text: str, engine: str, frames: bytes) -> None:
            kept.keep_clip(index, text, engine, frames)

    again = narrate(texts, tmp_path, Voice(narrator="silent"), timeout_seconds=30,
                    kept=Recording())
    assert spoken == ["Second section."]
    assert again.section_seconds == first.section_seconds
    # Another engine's audio is not taken for this one's.
    assert kept.load_clip(0, texts[0], "espeak-ng") is None


def test_the_retrying_migration_downgrades_and_upgrades_again(
    repository: ContentRepository,
) -> None:
    """Downgraded, a request waiting for its retry shows as it did before: generating."""
    from alembic import command

    from vividly_tasks.lessons.database import alembic_config

    row = repository.insert(topic="Fractions", modality="text")
    claim = repository.claim(row.id, holder="a", lease_seconds=60)
    assert claim is not None and repository.release(claim, "attempt 1 failed", utcnow())
    engine = repository.database.engine
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text(
            "SELECT status FROM content_requests")).scalar_one() == "generating"
    repository.database.migrate()
    assert current_revision(engine) == "0006"
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
