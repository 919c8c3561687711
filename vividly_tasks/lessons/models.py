"""The ``ContentRequest`` table (SQLAlchemy 2.x). Its schema is created by the migrations in
``vividly_tasks/lessons/migrations``; keep the two in step (a test compares them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vividly_tasks.lessons.status import Status


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no offset: store and read as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ContentRequest(Base):
    """One request for a lesson. Status changes go through ``vividly_tasks.lessons.database``,
    which guards each with the machine in ``vividly_tasks.lessons.status``."""

    __tablename__ = "content_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    topic: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    grade_level: Mapped[str | None] = mapped_column(Text)
    #: ``text`` or ``video``; stored as text so a bad value from another producer can be
    #: recorded as a validation failure rather than refused by the database.
    modality: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default=Status.PENDING.value, index=True)
    stage: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    #: Claims taken on the request: one per attempt that started work.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    #: Artifact name (``lesson.md``, ``lesson.html``, ``lesson.mp4``, ``manifest.json``) -> URI.
    artifacts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The hosted model that wrote the lesson and the tokens spent on it, over every attempt
    #: (what the request cost); the offline generator spends none.
    model_name: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Calls to the hosted model over every attempt (an answer asked again is a second call).
    model_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: While ``retrying``: when the retry is due (the reason is in ``error``).
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The claim: a token per attempt, who holds it, and until when unless renewed.
    claim_token: Mapped[str | None] = mapped_column(Text)
    claimed_by: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (for the CLI, task results and logs)."""
        values: dict[str, Any] = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            if isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            values[column.key] = value
        return values


class Course(Base):
    """Many lessons from one file, generated together (``vividly_tasks.lessons.courses``).
    Its lessons, in order, are ``CourseLesson`` rows; its index is built from them."""

    __tablename__ = "courses"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text)
    #: The file the lessons came from (its name, as given), for people.
    source: Mapped[str | None] = mapped_column(Text)
    lesson_count: Mapped[int] = mapped_column(Integer)
    #: The Celery chord of the last submit or resubmit: its group id and its callback's task id.
    chord_id: Mapped[str | None] = mapped_column(Text)
    build_task_id: Mapped[str | None] = mapped_column(Text)
    #: ``index.md`` and ``index.html`` -> URI, once built.
    index_artifacts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: What the index was built from (``courses.fingerprint``): it is current while it matches.
    index_fingerprint: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CourseLesson(Base):
    """A course's lesson at one position: the request that makes it now (a resubmission
    points it at a new request; the ones it replaced are listed in ``replaced``)."""

    __tablename__ = "course_lessons"
    __table_args__ = (Index("ix_course_lessons_request_id", "request_id", unique=True),)

    course_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("courses.id", name="fk_course_lessons_course_id"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("content_requests.id", name="fk_course_lessons_request_id")
    )
    #: Earlier requests of this position, oldest first: ``[{"request_id", "error"}]``.
    replaced: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    #: Read once from the lesson's manifest when it completed: its title and narrated length.
    title: Mapped[str | None] = mapped_column(Text)
    video_seconds: Mapped[float | None] = mapped_column(Double)

