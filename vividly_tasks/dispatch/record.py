"""The dispatcher's memory, shared by its processes: arrivals seen and launches made.

Every decision reads the record, decides and writes it while holding its lock, so wake-ups
racing in one process or several make their decisions one after the other, and the second
sees the first one's launch. That is what keeps 200 wake-ups in a second to one launch.

- ``FileRecord`` (``DISPATCH_RECORD=file``, the default): a JSON file behind an exclusive
  ``flock``; shared by the dispatchers of one machine (two ``serve`` processes, the local
  runner and ``vividly dispatch`` at once).
- ``DatabaseRecord`` (``DISPATCH_RECORD=database``): a row of the ``dispatch_records`` table
  in the product's database (``DATABASE_URL``), locked by the transaction that updates it (a
  row lock on PostgreSQL, the write lock on SQLite); shared by dispatchers on any number of
  machines or Cloud Run instances, and by the safety-net schedule's ``vividly dispatch``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from vividly_tasks.content.database import make_engine, migrate, translate_errors
from vividly_tasks.content.models import DispatchRecordRow, utcnow
from vividly_tasks.dispatch.inputs import Arrival, Launch, as_json


@dataclass
class RecordState:
    """The record's content while the lock is held; changes are saved when it is released."""

    arrivals: dict[str, Arrival] = field(default_factory=dict)
    launches: list[Launch] = field(default_factory=list)

    def add_arrival(self, arrival: Arrival) -> None:
        """Remember an arrival; a task seen again keeps its first publish time."""
        known = self.arrivals.get(arrival.task_id)
        if known is not None:
            arrival = Arrival(arrival.task_id, min(known.published_at, arrival.published_at),
                              arrival.due_at)
        self.arrivals[arrival.task_id] = arrival

    def prune(self, now: float, retention_seconds: float,
              max_delay_seconds: float = math.inf) -> None:
        """Forget arrivals that became due, and launches made, more than
        ``retention_seconds`` ago: by then Monitoring has caught up with them. No arrival
        counts as due later than ``max_delay_seconds`` after its publish time, whatever its
        eta says, so none is kept longer than the two together."""
        self.arrivals = {
            key: a for key, a in self.arrivals.items()
            if max(a.published_at, min(a.due_at or 0.0, a.published_at + max_delay_seconds))
            >= now - retention_seconds
        }
        self.launches = [x for x in self.launches if x.launched_at >= now - retention_seconds]


class Record(Protocol):
    def locked(self, now: float) -> contextlib.AbstractContextManager[RecordState]: ...


def state_from_json(text: str) -> RecordState:
    try:
        data = json.loads(text)
    except ValueError:  # a torn or foreign record: start over rather than stop dispatching
        return RecordState()
    return RecordState(
        arrivals={item["task_id"]: Arrival(**item) for item in data.get("arrivals", [])},
        launches=[Launch(**item) for item in data.get("launches", [])],
    )


def state_to_json(state: RecordState) -> str:
    return json.dumps({"arrivals": as_json(list(state.arrivals.values())),
                       "launches": as_json(state.launches)})


class FileRecord:
    """The record at ``path`` (created with its directory on first use)."""

    def __init__(self, path: Path, *, retention_seconds: float,
                 max_delay_seconds: float = math.inf) -> None:
        self.path = path
        self.retention_seconds = retention_seconds
        self.max_delay_seconds = max_delay_seconds

    @contextlib.contextmanager
    def locked(self, now: float) -> Iterator[RecordState]:
        """Hold the lock; yield the state (pruned at ``now``); save it on a normal exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._load()
                state.prune(now, self.retention_seconds, self.max_delay_seconds)
                yield state
                self._save(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> RecordState:
        try:
            return state_from_json(self.path.read_text())
        except FileNotFoundError:
            return RecordState()

    def _save(self, state: RecordState) -> None:
        # Write then rename: a reader never sees half a file.
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(state_to_json(state))
        partial.replace(self.path)


class DatabaseRecord:
    """The record of job ``key`` in the database at ``url`` (migrated on first use)."""

    def __init__(self, url: str, key: str, *, retention_seconds: float,
                 max_delay_seconds: float = math.inf) -> None:
        self.engine = make_engine(url)
        self.key = key
        self.retention_seconds = retention_seconds
        self.max_delay_seconds = max_delay_seconds
        self._ready = False

    @contextlib.contextmanager
    def locked(self, now: float) -> Iterator[RecordState]:
        """Hold the row's lock for the whole decision; save the state on a normal exit."""
        self._ensure_row()
        row = DispatchRecordRow
        with translate_errors(), self.engine.begin() as connection:
            # The first statement writes, so it takes the lock a decision must hold: the row
            # on PostgreSQL, the database's write lock on SQLite; a racing dispatcher waits.
            connection.execute(update(row).where(row.key == self.key)
                               .values(updated_at=utcnow()))
            text = connection.execute(select(row.state).where(row.key == self.key)).scalar_one()
            state = state_from_json(text)
            state.prune(now, self.retention_seconds, self.max_delay_seconds)
            yield state
            connection.execute(update(row).where(row.key == self.key)
                               .values(state=state_to_json(state), updated_at=utcnow()))

    def _ensure_row(self) -> None:
        with _SETUP_LOCK:  # Alembic's command state is process-wide: one migration at a time
            if not self._ready:
                self._create_row()

    def _create_row(self) -> None:
        migrate(self.engine)
        dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(self.engine.dialect.name)
        if dialect is None:
            raise ValueError(f"DISPATCH_RECORD=database needs PostgreSQL or SQLite, not "
                             f"{self.engine.dialect.name}")
        insert: Any = dialect.insert(DispatchRecordRow)
        with translate_errors(), self.engine.begin() as connection:
            connection.execute(insert.values(
                key=self.key, state=state_to_json(RecordState()), updated_at=utcnow(),
            ).on_conflict_do_nothing(index_elements=["key"]))
        self._ready = True

    def dispose(self) -> None:
        self.engine.dispose()


_SETUP_LOCK = threading.Lock()
