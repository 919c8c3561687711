"""The content database: engine and sessions from the settings, and the migrations.

``migrate()`` brings the schema to the newest revision with Alembic (migrations live in
``vividly_tasks/lessons/migrations``); workers and the CLI call it, nobody runs SQL by hand.
Database errors that mean "unavailable or busy" become ``DatabaseUnavailable`` here, once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from vividly_tasks import databases
from vividly_tasks.databases import make_engine
from vividly_tasks.lessons.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

MIGRATIONS_LOCATION = "vividly_tasks.lessons:migrations"
#: Alembic's default name: the lesson schema's revisions (the dispatcher's record has its own).
VERSION_TABLE = "alembic_version"
#: Arbitrary, fixed key of the PostgreSQL advisory lock that serialises concurrent migrations.
MIGRATION_LOCK_KEY = 0x76697669


class ContentDatabase:
    """An engine and its session factory; one per process (create it after a fork)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction, committed on success; unavailability is translated."""
        with translate_errors(), self.sessions.begin() as session:
            yield session

    def migrate(self) -> None:
        migrate(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def translate_errors() -> contextlib.AbstractContextManager[None]:
    """Connection loss, timeouts and lock contention become ``DatabaseUnavailable``."""
    return databases.unavailable_as(DatabaseUnavailable, "content database")


def alembic_config() -> Config:
    return databases.alembic_config(MIGRATIONS_LOCATION, VERSION_TABLE)


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision, however many processes start at once."""
    try:
        databases.upgrade(engine, alembic_config(), lock_key=MIGRATION_LOCK_KEY)
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnavailable(f"migrating the content database failed: {exc}") from exc


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        revision: str | None = MigrationContext.configure(connection).get_current_revision()
        return revision
