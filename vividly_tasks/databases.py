"""SQLAlchemy engines and Alembic migrations for the parts that keep tables: the lesson
workload's requests and the dispatcher's record, each with its own schema, migrations and
version table. Needs SQLAlchemy and Alembic, which those parts' extras install.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_SECONDS = 30
MIGRATION_ATTEMPTS = 5


def make_engine(url: str) -> Engine:
    """An engine for ``url``: SQLite gets WAL and a busy timeout, so processes share it."""
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


def alembic_config(script_location: str, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["version_table"] = version_table
    return config


def upgrade(engine: Engine, config: Config, *, lock_key: int) -> None:
    """Upgrade a schema to its newest revision. Safe when many processes start at once:
    PostgreSQL serialises on the advisory lock ``lock_key``; SQLite's losers of the write lock
    retry. Raises the last error after ``MIGRATION_ATTEMPTS``."""
    for attempt in range(1, MIGRATION_ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": lock_key})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
            return
        except (OperationalError, DBAPIError) as exc:
            if attempt == MIGRATION_ATTEMPTS:
                raise
            logger.warning("migration attempt %d failed, retrying: %s", attempt, exc)
            time.sleep(0.2 * attempt)
        finally:
            config.attributes.pop("connection", None)


@contextlib.contextmanager
def unavailable_as(error: Callable[[str], Exception], what: str) -> Iterator[None]:
    """Connection loss, timeouts and lock contention raised as ``error`` ("``what``
    unavailable: ..."), the caller's own exception; other database errors pass."""
    try:
        yield
    except (OperationalError, DisconnectionError, PoolTimeoutError) as exc:
        raise error(f"{what} unavailable: {exc}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise error(f"{what}: connection lost: {exc}") from exc
        raise
