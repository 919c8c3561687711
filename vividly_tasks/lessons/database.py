"""The content database: engine and sessions from the settings, and the migrations.

``migrate()`` brings the schema to the newest revision with Alembic (migrations live in
``vividly_tasks/lessons/migrations``); workers and the CLI call it, nobody runs SQL by hand.
Database errors that mean "unavailable or busy" become ``DatabaseUnavailable`` here, once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from vividly_tasks.lessons.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

MIGRATIONS_LOCATION = "vividly_tasks.lessons:migrations"
SQLITE_BUSY_TIMEOUT_SECONDS = 30
#: Arbitrary, fixed key of the PostgreSQL advisory lock that serialises concurrent migrations.
MIGRATION_LOCK_KEY = 0x76697669
MIGRATION_ATTEMPTS = 5


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite gets WAL and a busy timeout, so worker processes share it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


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


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Connection loss, timeouts and lock contention become ``DatabaseUnavailable``."""
    try:
        yield
    except (OperationalError, DisconnectionError, PoolTimeoutError) as exc:
        raise DatabaseUnavailable(f"content database unavailable: {exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailable(f"content database connection lost: {exc}") from exc
        raise


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_LOCATION)
    return config


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision. Safe when many processes start at once:
    PostgreSQL serialises on an advisory lock; SQLite's losers of the write lock retry."""
    config = alembic_config()
    for attempt in range(1, MIGRATION_ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            return
        except (OperationalError, DBAPIError) as exc:
            if attempt == MIGRATION_ATTEMPTS:
                raise DatabaseUnavailable(f"migrating the content database failed: {exc}") from exc
            logger.warning("migration attempt %d failed, retrying: %s", attempt, exc)
            time.sleep(0.2 * attempt)
        finally:
            config.attributes.pop("connection", None)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        revision: str | None = MigrationContext.configure(connection).get_current_revision()
        return revision
