"""Courses: many lessons from one file, generated together, with one index (no Celery here).

A course file lists lessons, one per line: CSV with a header row, or JSON Lines (an object a
line), with the fields ``topic``, ``modality`` (``text`` | ``video``), ``grade`` and
``subject`` (``grade_level`` is taken for ``grade``). ``read_course_file`` validates every line
as ``vividly submit`` validates one request and reports every bad line by its number; the
course is created only from a file with none (``CourseFileError`` otherwise).

``CourseRepository`` keeps a course and its lessons in order (``courses``, ``course_lessons``):
each position points at the content request that makes it now. Creating a course writes the
course, its requests (``pending``) and their positions in one transaction. Resubmitting a
position makes a new request with the same fields and points the position at it; the one it
replaced stays as it was (``failed`` is final) and is listed in ``replaced``.

The course's index is built from these rows (``course_index``), so it shows the database's
truth whatever Celery reported; ``fingerprint`` says what it was built from, and an index is
current while the fingerprint of the rows still matches it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from vividly_tasks.lessons.database import ContentDatabase
from vividly_tasks.lessons.errors import InvalidRequest
from vividly_tasks.lessons.models import ContentRequest, Course, CourseLesson, utcnow
from vividly_tasks.lessons.repository import parse_request_id
from vividly_tasks.lessons.status import Status, is_terminal, sources
from vividly_tasks.lessons.validation import validate

#: The fields of a lesson line; ``grade_level`` is accepted for ``grade``.
FIELDS = ("topic", "modality", "grade", "subject")
FIELD_ALIASES = {"grade_level": "grade"}
#: Most lessons in one course file, and its largest size: a course is a unit of 20-200 lessons.
MAX_COURSE_LESSONS = 5000
MAX_COURSE_FILE_BYTES = 10 * 1024 * 1024
#: Most bad lines an error quotes (then: "and N more").
MAX_REPORTED_PROBLEMS = 20


class CourseFileError(ValueError):
    """A course file that cannot be used as it stands; ``problems`` names each bad line."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        shown = list(problems[:MAX_REPORTED_PROBLEMS])
        if len(problems) > len(shown):
            shown.append(f"and {len(problems) - len(shown)} more")
        super().__init__(f"{source}: " + "; ".join(shown))
        self.problems = list(problems)


@dataclass(frozen=True)
class LessonLine:
    """One validated lesson of a course file (``line``: its line number, from 1)."""

    line: int
    topic: str
    modality: str
    grade: str | None = None
    subject: str | None = None


def read_course_file(
    path: Path, *, max_topic_chars: int = 200, max_field_chars: int = 100,
    file_format: str | None = None,
) -> list[LessonLine]:
    """The lessons of ``path`` in order: CSV (``.csv``) or JSON Lines (``.jsonl``,
    ``.ndjson``; other names: JSON Lines if the first character is ``{``)."""
    try:
        if path.stat().st_size > MAX_COURSE_FILE_BYTES:
            raise CourseFileError(str(path), [f"larger than {MAX_COURSE_FILE_BYTES:,} bytes"])
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CourseFileError(str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]
                              ) from None
    return parse_course_text(text, source=str(path), file_format=file_format or
                             format_of(path.name, text), max_topic_chars=max_topic_chars,
                             max_field_chars=max_field_chars)


def format_of(name: str, text: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def parse_course_text(
    text: str, *, source: str = "course file", file_format: str = "csv",
    max_topic_chars: int = 200, max_field_chars: int = 100,
) -> list[LessonLine]:
    """Every lesson of ``text``, validated; ``CourseFileError`` naming each bad line."""
    rows = _csv_rows(text, source) if file_format == "csv" else _jsonl_rows(text)
    problems: list[str] = []
    lessons: list[LessonLine] = []
    for line, fields in rows:
        if isinstance(fields, str):
            problems.append(f"line {line}: {fields}")
            continue
        try:
            lessons.append(_lesson(line, fields, max_topic_chars, max_field_chars))
        except InvalidRequest as exc:
            problems.append(f"line {line}: {exc.reason}")
    if not lessons and not problems:
        problems.append("no lessons")
    if len(lessons) > MAX_COURSE_LESSONS:
        problems.append(f"{len(lessons)} lessons; a course has at most {MAX_COURSE_LESSONS}")
    if problems:
        raise CourseFileError(source, problems)
    return lessons


def _lesson(line: int, fields: dict[str, Any], max_topic_chars: int,
            max_field_chars: int) -> LessonLine:
    fields = {FIELD_ALIASES.get(key, key): value for key, value in fields.items()}
    if unknown := sorted(set(fields) - set(FIELDS)):
        raise InvalidRequest(f"unknown field {', '.join(map(repr, unknown))} "
                             f"(the fields are {', '.join(FIELDS)})")
    grade = fields.get("grade")
    if isinstance(grade, int) and not isinstance(grade, bool):
        grade = str(grade)  # JSON Lines may give the grade as a number
    if grade is not None and not isinstance(grade, str):
        raise InvalidRequest(f"grade is {type(grade).__name__}, not text")
    spec = validate(
        topic=fields.get("topic"), modality=fields.get("modality"),
        subject=fields.get("subject"), grade_level=grade,
        max_topic_chars=max_topic_chars, max_field_chars=max_field_chars,
    )
    subject = fields.get("subject")
    return LessonLine(
        line=line, topic=spec.topic, modality=spec.modality.value,
        grade=" ".join(grade.split()) if isinstance(grade, str) and grade.strip() else None,
        subject=spec.subject if isinstance(subject, str) and subject.strip() else None,
    )


def _csv_rows(text: str, source: str) -> Iterable[tuple[int, dict[str, Any] | str]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines are allowed anywhere
            if header is None:
                header = [FIELD_ALIASES.get(name.strip().lower(), name.strip().lower())
                          for name in record]
                missing = [name for name in ("topic", "modality") if name not in header]
                if missing:
                    raise CourseFileError(source, [
                        f"line {line}: the header row has no {' or '.join(missing)} column "
                        f"(the columns are {', '.join(FIELDS)})"])
                continue
            if len(record) > len(header):
                yield line, f"{len(record)} cells; the header has {len(header)}"
                continue
            yield line, {name: cell for name, cell in zip(header, record, strict=False)
                         if name or cell.strip()}
    except csv.Error as exc:
        raise CourseFileError(source, [f"line {reader.line_num}: not CSV ({exc})"]) from None


def _jsonl_rows(text: str) -> Iterable[tuple[int, dict[str, Any] | str]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield line, f"not JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(value, dict):
            yield line, f"a JSON {type(value).__name__}, not an object"
            continue
        yield line, value


@dataclass(frozen=True)
class CourseEntry:
    """A course's lesson as the index and ``vividly course status`` see it."""

    position: int
    lesson: CourseLesson
    request: ContentRequest


def fingerprint(entries: Sequence[CourseEntry]) -> str:
    """What an index built from ``entries`` shows: each position's request, status and last
    change. Equal fingerprints, equal index."""
    digest = hashlib.sha256()
    for entry in entries:
        request = entry.request
        digest.update(f"{entry.position}|{request.id}|{request.status}|"
                      f"{request.updated_at.isoformat()}\n".encode())
    return digest.hexdigest()


def all_finished(entries: Sequence[CourseEntry]) -> bool:
    return all(is_terminal(entry.request.status) for entry in entries)


class CourseRepository:
    """Courses and their lessons, on the content database."""

    def __init__(self, database: ContentDatabase) -> None:
        self.database = database

    def create(self, *, name: str, source: str | None,
               lessons: Sequence[LessonLine]) -> tuple[Course, list[uuid.UUID]]:
        """The course, a ``pending`` request per lesson and its position, in one
        transaction; returns the course and the request ids in order."""
        now = utcnow()
        course = Course(id=uuid.uuid4(), name=name, source=source, lesson_count=len(lessons),
                        created_at=now, updated_at=now)
        ids = [uuid.uuid4() for _ in lessons]
        with self.database.session() as session:
            session.add(course)
            session.flush()
            session.add_all(_request(request_id, lesson, now)
                            for request_id, lesson in zip(ids, lessons, strict=True))
            session.flush()
            session.add_all(CourseLesson(course_id=course.id, position=position,
                                         request_id=request_id)
                            for position, request_id in enumerate(ids, start=1))
        return course, ids

    def get(self, course_id: str | uuid.UUID) -> Course | None:
        parsed = parse_request_id(course_id)
        if parsed is None:
            return None
        with self.database.session() as session:
            return session.get(Course, parsed)

    def entries(self, course_id: uuid.UUID) -> list[CourseEntry]:
        """The course's lessons in order, each with its current request."""
        query = (
            select(CourseLesson, ContentRequest)
            .join(ContentRequest, ContentRequest.id == CourseLesson.request_id)
            .where(CourseLesson.course_id == course_id)
            .order_by(CourseLesson.position)
        )
        with self.database.session() as session:
            return [CourseEntry(lesson.position, lesson, request)
                    for lesson, request in session.execute(query).all()]

    def mark_queued(self, request_ids: Sequence[uuid.UUID]) -> None:
        """pending -> queued for each request whose message Pub/Sub confirmed (a guarded
        UPDATE, as ``ContentRepository.mark_queued``: a worker may have claimed it already)."""
        allowed = [status.value for status in sources(Status.QUEUED)]
        now = utcnow()
        with self.database.session() as session:
            for chunk in _chunks(request_ids):
                session.execute(
                    update(ContentRequest)
                    .where(ContentRequest.id.in_(chunk), ContentRequest.status.in_(allowed))
                    .values(status=Status.QUEUED.value, error=None, queued_at=now,
                            updated_at=now)
                    .execution_options(synchronize_session=False)
                )

    def record_enqueue_error(self, request_ids: Sequence[uuid.UUID], error: str) -> None:
        """Leave these requests ``pending`` with the reason their messages were not sent."""
        with self.database.session() as session:
            for chunk in _chunks(request_ids):
                session.execute(
                    update(ContentRequest)
                    .where(ContentRequest.id.in_(chunk),
                           ContentRequest.status == Status.PENDING.value)
                    .values(error=error, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )

    def set_chord(self, course_id: uuid.UUID, chord_id: str, build_task_id: str) -> None:
        with self.database.session() as session:
            session.execute(update(Course).where(Course.id == course_id).values(
                chord_id=chord_id, build_task_id=build_task_id, updated_at=utcnow()))

    def replace(self, course_id: uuid.UUID, positions: Sequence[int]) -> list[uuid.UUID]:
        """A new ``pending`` request for each position, with the fields of the one it
        replaces, which is kept (with its error) in the position's ``replaced``. A position
        whose request is completed, or still at work (queued, generating, retrying), is
        refused with ``ValueError``; one never enqueued (``pending``) is failed first."""
        now = utcnow()
        new_ids: list[uuid.UUID] = []
        with self.database.session() as session:
            for position in positions:
                lesson = session.get(CourseLesson, (course_id, position))
                if lesson is None:
                    raise LookupError(f"course {course_id} has no lesson {position}")
                old = session.get(ContentRequest, lesson.request_id)
                assert old is not None
                if old.status not in {Status.FAILED, Status.PENDING}:
                    raise ValueError(f"lesson {position} is {old.status}; only failed lessons "
                                     "(or ones never enqueued) are resubmitted")
                if old.status == Status.PENDING:
                    old.status = Status.FAILED.value
                    old.error = old.error or "replaced before it was enqueued"
                    old.finished_at = old.updated_at = now
                new = ContentRequest(
                    id=uuid.uuid4(), topic=old.topic, subject=old.subject,
                    grade_level=old.grade_level, modality=old.modality,
                    status=Status.PENDING.value, progress=0, attempts=0, created_at=now,
                    updated_at=now,
                )
                session.add(new)
                session.flush()
                lesson.replaced = [*(lesson.replaced or []),
                                   {"request_id": str(old.id), "error": old.error}]
                lesson.request_id = new.id
                lesson.title = None
                lesson.video_seconds = None
                new_ids.append(new.id)
        return new_ids

    def note_lesson_facts(self, course_id: uuid.UUID, position: int, *, title: str | None,
                          video_seconds: float | None) -> None:
        """Keep what the index reads from a completed lesson's manifest, read once."""
        with self.database.session() as session:
            session.execute(
                update(CourseLesson)
                .where(CourseLesson.course_id == course_id, CourseLesson.position == position)
                .values(title=title, video_seconds=video_seconds)
            )

    def record_index(self, course_id: uuid.UUID, artifacts: dict[str, str],
                     built_from: str) -> None:
        now = utcnow()
        with self.database.session() as session:
            session.execute(update(Course).where(Course.id == course_id).values(
                index_artifacts=artifacts, index_fingerprint=built_from, indexed_at=now,
                updated_at=now))


def _request(request_id: uuid.UUID, lesson: LessonLine, now: Any) -> ContentRequest:
    return ContentRequest(
        id=request_id, topic=lesson.topic, subject=lesson.subject, grade_level=lesson.grade,
        modality=lesson.modality, status=Status.PENDING.value, progress=0, attempts=0,
        created_at=now, updated_at=now,
    )


#: Ids per ``IN (...)`` clause: well under SQLite's and PostgreSQL's limits of bound values.
IDS_PER_STATEMENT = 500


def _chunks(ids: Sequence[uuid.UUID]) -> Iterable[Sequence[uuid.UUID]]:
    for start in range(0, len(ids), IDS_PER_STATEMENT):
        yield ids[start:start + IDS_PER_STATEMENT]
