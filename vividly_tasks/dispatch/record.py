"""The dispatcher's memory, shared by its processes: arrivals seen and launches made, as rows.

A wake-up writes one row (its arrival, an upsert keyed by task id) without taking the
decision's lock. A decision takes the record's lock (an update of the job's row in
``dispatch_records``: a row lock on PostgreSQL, the write lock on SQLite), forgets what the
facts prove done and what has expired, counts the arrivals still to do by index ranges, reads
the recent launches and reserves its own: racing decisions, in one process or several, are
made one after the other, and the second sees the first one's reservation. What either costs
does not grow with the arrivals recorded: the statements touch index ranges, and each arrival
is deleted once (bench/dispatch_record.py measures it at 100,000 arrivals).

- ``FileRecord`` (``DISPATCH_RECORD=file``, the default): a SQLite file of the dispatcher's
  own (``DISPATCH_RECORD_PATH``, only the dispatcher's tables, created on first use); shared
  by the dispatchers of one machine (two ``serve`` processes, the local runner and
  ``vividly dispatch`` at once).
- ``DatabaseRecord`` (``DISPATCH_RECORD=database``): the same tables in the database at
  ``DATABASE_URL`` (created by the record's own migrations, ``vividly_tasks.dispatch.schema``,
  beside whatever else that database holds); shared by dispatchers on any number of machines or
  Cloud Run instances, and by the safety-net schedule's ``vividly dispatch``.

Times are ``time.time()`` seconds, compared with the runner's and Monitoring's times, never
with the database's clock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DatabaseError, OperationalError

from vividly_tasks.databases import make_engine
from vividly_tasks.dispatch.decision import ArrivalCounts
from vividly_tasks.dispatch.errors import DispatchConfigError
from vividly_tasks.dispatch.inputs import Arrival, Launch
from vividly_tasks.dispatch.schema import (
    DispatchArrivalRow,
    DispatchBase,
    DispatchLaunchRow,
    DispatchRecordRow,
    migrate,
    translate_errors,
    utcnow,
)

logger = logging.getLogger(__name__)

_ARRIVAL = DispatchArrivalRow
_LAUNCH = DispatchLaunchRow
#: The file record holds the dispatcher's tables only, not the product's.
_FILE_TABLES = [DispatchBase.metadata.tables[row.__tablename__]
                for row in (DispatchRecordRow, DispatchArrivalRow, DispatchLaunchRow)]
_SETUP_ATTEMPTS = 5
#: A launch's columns in ``Launch``'s order.
_LAUNCHES = select(_LAUNCH.name, _LAUNCH.launched_at, _LAUNCH.task_count, _LAUNCH.sized_for,
                   _LAUNCH.seen)


class Record(Protocol):
    """What the dispatcher keeps between wake-ups (see the module docstring)."""

    def add_arrival(self, arrival: Arrival) -> None:
        """Remember an arrival; a task seen again keeps its first publish time."""

    def locked(self, now: float) -> contextlib.AbstractContextManager[LockedRecord]:
        """Hold the decision's lock (pruned at ``now``); commit on a normal exit."""

    def name_launch(self, reserved: str, name: str) -> None:
        """The reserved launch got its execution's name."""

    def drop_launch(self, name: str) -> None:
        """Forget a launch (its reservation failed)."""

    def arrivals(self) -> list[Arrival]:
        """Every arrival recorded (``--dry-run``'s full inputs, tests)."""

    def launches(self) -> list[Launch]:
        """Every launch recorded, oldest first."""


class LockedRecord:
    """The record of one job, inside a decision's transaction."""

    def __init__(self, connection: Connection, key: str) -> None:
        self.connection = connection
        self.key = key

    def forget_proven(self, *, idle_exit_proof: float, metric_proof: float) -> int:
        """Delete the arrivals the facts prove done (``decision.proven_done``); how many."""
        forgotten = 0
        if idle_exit_proof > -math.inf:
            forgotten += self._delete(_ARRIVAL.deliverable_at <= idle_exit_proof)
        if metric_proof > -math.inf:
            forgotten += self._delete(_ARRIVAL.published_at < metric_proof)
        return forgotten

    def _delete(self, condition: Any) -> int:
        result = self.connection.execute(
            delete(_ARRIVAL).where(_ARRIVAL.job == self.key, condition))
        return int(result.rowcount or 0)

    def counts(self, now: float, lead_seconds: float, sampled_at: float | None, *,
               undelivered: int | None = None,
               limit: int | None = None) -> ArrivalCounts:
        """The still-to-do arrivals as ``decision.count_arrivals`` counts them, each count
        stopped at ``limit`` (``decision.count_limit``), and the delayed ones in the sample at
        its ``undelivered`` (the decision subtracts them from it): index ranges of bounded
        length, however many arrivals are recorded.

        An arrival is ready when ``deliverable_at <= now + lead``: its publish time is never
        after the wake-up that recorded it, so that is ``Arrival.ready_at(lead) <= now``."""
        horizon = now + lead_seconds
        job = _ARRIVAL.job == self.key
        is_ready = _ARRIVAL.deliverable_at <= horizon
        is_delayed = _ARRIVAL.deliverable_at > horizon
        first = self.connection.execute(
            select(func.min(_ARRIVAL.deliverable_at)).where(job, is_delayed)).scalar()
        ready_after = delayed_before = 0
        if sampled_at is not None:
            ready_after = self._count(limit, job, is_ready, _ARRIVAL.published_at > sampled_at)
            delayed_before = self._count(undelivered, job, is_delayed,
                                         _ARRIVAL.published_at <= sampled_at)
        return ArrivalCounts(
            ready=self._count(limit, job, is_ready),
            delayed=self._count(limit, job, is_delayed),
            # Not ready yet means due later than the lead: ready at its due time less the lead.
            next_ready_at=None if first is None else float(first) - lead_seconds,
            ready_after_sample=ready_after, delayed_in_sample=delayed_before, limit=limit,
        )

    def _count(self, limit: int | None, *conditions: Any) -> int:
        rows = select(literal(1)).select_from(_ARRIVAL).where(*conditions)
        if limit is not None:
            rows = rows.limit(limit)
        return int(self.connection.execute(
            select(func.count()).select_from(rows.subquery())).scalar_one())

    def recent_launches(self, since: float) -> list[Launch]:
        """The launches made at or after ``since``, and the last one whenever it was made
        (what a decision looks at), oldest first."""
        rows = self.connection.execute(
            _LAUNCHES.where(_LAUNCH.job == self.key, _LAUNCH.launched_at >= since)
            .order_by(_LAUNCH.launched_at)).all()
        if not rows:
            rows = self.connection.execute(
                _LAUNCHES.where(_LAUNCH.job == self.key)
                .order_by(_LAUNCH.launched_at.desc()).limit(1)).all()
        return [Launch(*row) for row in rows]

    def mark_seen(self, names: Collection[str]) -> None:
        """The runner lists these launches: from now on only its word counts."""
        if names:
            self.connection.execute(
                update(_LAUNCH).where(_LAUNCH.job == self.key, _LAUNCH.name.in_(list(names)))
                .values(seen=True))

    def add_launch(self, launch: Launch) -> None:
        self.connection.execute(insert(_LAUNCH).values(
            job=self.key, name=launch.name, launched_at=launch.launched_at,
            task_count=launch.task_count, sized_for=launch.sized_for, seen=launch.seen))


class SqlRecord:
    """The record of job ``key`` in the database of ``engine`` (see the subclasses)."""

    def __init__(self, engine: Engine, key: str, *, retention_seconds: float) -> None:
        self.engine = engine
        self.key = key
        #: Arrivals deliverable, and launches made, longer ago than this are forgotten: by
        #: then Monitoring has long caught up with them.
        self.retention_seconds = retention_seconds
        self._ready = False
        self._setup_lock = threading.Lock()

    def add_arrival(self, arrival: Arrival) -> None:
        self._ensure_ready()
        deliverable = max(arrival.published_at, arrival.due_at or arrival.published_at)
        values = {"job": self.key, "task_id": arrival.task_id,
                  "published_at": arrival.published_at, "due_at": arrival.due_at,
                  "deliverable_at": deliverable}
        new = self._dialect().insert(_ARRIVAL.__table__).values(**values)
        stored = _ARRIVAL.__table__.c
        on_sqlite = self.engine.dialect.name == "sqlite"
        least, greatest = (func.min, func.max) if on_sqlite else (func.least, func.greatest)
        # A copy published again keeps the first publish time and takes the new eta.
        first = least(stored.published_at, new.excluded.published_at)
        upsert = new.on_conflict_do_update(
            index_elements=["job", "task_id"],
            set_={"published_at": first, "due_at": new.excluded.due_at,
                  "deliverable_at": greatest(first, func.coalesce(new.excluded.due_at,
                                                                  first))})
        with translate_errors(), self.engine.begin() as connection:
            connection.execute(upsert)

    @contextlib.contextmanager
    def locked(self, now: float) -> Iterator[LockedRecord]:
        self._ensure_ready()
        row = DispatchRecordRow
        with translate_errors(), self.engine.begin() as connection:
            # The first statement writes, so it takes the lock a decision must hold: the row
            # on PostgreSQL, the database's write lock on SQLite; a racing decision waits.
            connection.execute(update(row).where(row.key == self.key)
                               .values(updated_at=utcnow()))
            expired = now - self.retention_seconds
            connection.execute(delete(_ARRIVAL).where(_ARRIVAL.job == self.key,
                                                      _ARRIVAL.deliverable_at < expired))
            connection.execute(delete(_LAUNCH).where(_LAUNCH.job == self.key,
                                                     _LAUNCH.launched_at < expired))
            yield LockedRecord(connection, self.key)

    def name_launch(self, reserved: str, name: str) -> None:
        with translate_errors(), self.engine.begin() as connection:
            connection.execute(update(_LAUNCH).where(_LAUNCH.job == self.key,
                                                     _LAUNCH.name == reserved)
                               .values(name=name))

    def drop_launch(self, name: str) -> None:
        with translate_errors(), self.engine.begin() as connection:
            connection.execute(delete(_LAUNCH).where(_LAUNCH.job == self.key,
                                                     _LAUNCH.name == name))

    def arrivals(self) -> list[Arrival]:
        self._ensure_ready()
        with translate_errors(), self.engine.connect() as connection:
            rows = connection.execute(
                select(_ARRIVAL.task_id, _ARRIVAL.published_at, _ARRIVAL.due_at)
                .where(_ARRIVAL.job == self.key).order_by(_ARRIVAL.published_at)).all()
        return [Arrival(task_id, published, due) for task_id, published, due in rows]

    def launches(self) -> list[Launch]:
        self._ensure_ready()
        with translate_errors(), self.engine.connect() as connection:
            rows = connection.execute(
                _LAUNCHES.where(_LAUNCH.job == self.key).order_by(_LAUNCH.launched_at)).all()
        return [Launch(*row) for row in rows]

    def dispose(self) -> None:
        self.engine.dispose()

    def _dialect(self) -> Any:
        dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(self.engine.dialect.name)
        if dialect is None:
            raise DispatchConfigError(f"the dispatcher's record needs PostgreSQL or SQLite, "
                                      f"not {self.engine.dialect.name}")
        return dialect

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._setup_lock:
            if not self._ready:
                self._create_tables()
                with translate_errors(), self.engine.begin() as connection:
                    connection.execute(
                        self._dialect().insert(DispatchRecordRow.__table__)
                        .values(key=self.key, updated_at=utcnow())
                        .on_conflict_do_nothing(index_elements=["key"]))
                self._ready = True

    def _create_tables(self) -> None:
        raise NotImplementedError


class FileRecord(SqlRecord):
    """The record at ``path``, a SQLite file (created with its directory on first use)."""

    def __init__(self, path: Path, *, key: str = "vividly-job",
                 retention_seconds: float) -> None:
        self.path = path
        super().__init__(make_engine(f"sqlite:///{path}"), key,
                         retention_seconds=retention_seconds)

    def _create_tables(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _SETUP_ATTEMPTS + 1):
            try:
                DispatchBase.metadata.create_all(self.engine, tables=_FILE_TABLES)
                return
            except OperationalError as exc:
                # Another dispatcher created a table between the check and the CREATE, or
                # held the write lock: the next attempt sees its tables.
                if attempt == _SETUP_ATTEMPTS:
                    raise DispatchConfigError(
                        f"cannot create the dispatcher's record in {self.path}: {exc}"
                    ) from exc
                time.sleep(0.1 * attempt)
            except DatabaseError as exc:  # a file of something else, e.g. the old JSON record
                raise DispatchConfigError(
                    f"{self.path} is not the dispatcher's record (a SQLite file): {exc}; "
                    "remove it or set DISPATCH_RECORD_PATH to another path"
                ) from exc


class DatabaseRecord(SqlRecord):
    """The record of job ``key`` in the database at ``url`` (its tables migrated on first
    use)."""

    def __init__(self, url: str, key: str, *, retention_seconds: float) -> None:
        super().__init__(make_engine(url), key, retention_seconds=retention_seconds)

    def _create_tables(self) -> None:
        self._dialect()
        with _MIGRATION_LOCK:  # Alembic's command state is process-wide
            migrate(self.engine)


_MIGRATION_LOCK = threading.Lock()
