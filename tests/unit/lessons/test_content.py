"""The content domain's pure parts, and its database layer on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import uuid
import wave
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vividly_tasks.lessons import status as machine
from vividly_tasks.lessons.errors import (
    InvalidRequest,
    StorageUnavailable,
    ToolMissing,
    TransientError,
)
from vividly_tasks.lessons.generator import OfflineGenerator
from vividly_tasks.lessons.lesson import render_html, render_markdown
from vividly_tasks.lessons.narration import ENGINE_SILENCE, Voice, narrate
from vividly_tasks.lessons.status import Status
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
