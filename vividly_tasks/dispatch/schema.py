"""The dispatchers' shared record as tables, with a schema and migrations of its own
(``vividly_tasks/dispatch/migrations``, revisions in the ``dispatch_alembic_version`` table), so
it can share a database with any app's tables or live in a SQLite file of its own.

Database errors that mean "unavailable or busy" become ``DispatchUnavailable`` here, once.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Double, Engine, Index, Integer, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from vividly_tasks import databases
from vividly_tasks.dispatch.errors import DispatchUnavailable

MIGRATIONS_LOCATION = "vividly_tasks.dispatch:migrations"
VERSION_TABLE = "dispatch_alembic_version"
#: Arbitrary, fixed key of the PostgreSQL advisory lock that serialises its migrations.
MIGRATION_LOCK_KEY = 0x76647370


class DispatchBase(DeclarativeBase):
    pass


class DispatchRecordRow(DispatchBase):
    """One row per job: the lock a decision holds (``vividly_tasks.dispatch.record``)."""

    __tablename__ = "dispatch_records"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    #: Written by every decision to take the row's lock; read by nobody.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DispatchArrivalRow(DispatchBase):
    """A task the wake-up subscription announced, until it is proven done or its time has
    passed. Times are ``time.time()`` seconds: the decision compares them with the runner's
    and Monitoring's, never with the database's clock."""

    __tablename__ = "dispatch_arrivals"
    __table_args__ = (
        # A decision counts ready / delayed arrivals by when they can be delivered, and forgets
        # them by the same key: index ranges, never a read of every arrival.
        Index("ix_dispatch_arrivals_deliverable", "job", "deliverable_at"),
        Index("ix_dispatch_arrivals_published", "job", "published_at"),
    )

    job: Mapped[str] = mapped_column(Text, primary_key=True)
    task_id: Mapped[str] = mapped_column(Text, primary_key=True)
    published_at: Mapped[float] = mapped_column(Double)
    due_at: Mapped[float | None] = mapped_column(Double)
    #: max(published_at, due_at): a worker can receive it from then on.
    deliverable_at: Mapped[float] = mapped_column(Double)


class DispatchLaunchRow(DispatchBase):
    """An execution a dispatcher started (``pending-...`` while the Run API answers)."""

    __tablename__ = "dispatch_launches"
    __table_args__ = (Index("ix_dispatch_launches_launched", "job", "launched_at"),)

    job: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    launched_at: Mapped[float] = mapped_column(Double)
    task_count: Mapped[int] = mapped_column(Integer)
    sized_for: Mapped[int] = mapped_column(Integer)
    seen: Mapped[bool] = mapped_column(Boolean, default=False)


def utcnow() -> datetime:
    return datetime.now(UTC)


def migrate(engine: Engine) -> None:
    """Bring the record's tables to their newest revision."""
    config = databases.alembic_config(MIGRATIONS_LOCATION, VERSION_TABLE)
    with translate_errors():
        databases.upgrade(engine, config, lock_key=MIGRATION_LOCK_KEY)


def translate_errors() -> contextlib.AbstractContextManager[None]:
    """Connection loss, timeouts and lock contention become ``DispatchUnavailable``."""
    return databases.unavailable_as(DispatchUnavailable, "the dispatchers' record")
