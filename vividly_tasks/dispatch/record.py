"""The dispatcher's memory, shared by its processes: arrivals seen and launches made.

A JSON file behind an exclusive ``flock``: every decision reads it, decides and writes it
while holding the lock, so wake-ups racing in one process or several (two dispatchers on one
machine, the local runner and ``vividly dispatch`` at once) make their decisions one after the
other, and the second sees the first one's launch. That is what keeps 200 wake-ups in a second
to one launch. On Cloud Run the file is the one instance's (``--max-instances=1``): a new
instance starts with an empty memory, and the Run API's list of running executions is then
what keeps it from launching twice (docs/cloud-run.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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

    def prune(self, now: float, retention_seconds: float) -> None:
        """Forget arrivals that became due, and launches made, more than
        ``retention_seconds`` ago: by then Monitoring has caught up with them."""
        self.arrivals = {
            key: a for key, a in self.arrivals.items()
            if max(a.published_at, a.due_at or 0.0) >= now - retention_seconds
        }
        self.launches = [x for x in self.launches if x.launched_at >= now - retention_seconds]


class FileRecord:
    """The record at ``path`` (created with its directory on first use)."""

    def __init__(self, path: Path, *, retention_seconds: float) -> None:
        self.path = path
        self.retention_seconds = retention_seconds

    @contextlib.contextmanager
    def locked(self, now: float) -> Iterator[RecordState]:
        """Hold the lock; yield the state (pruned at ``now``); save it on a normal exit."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._load()
                state.prune(now, self.retention_seconds)
                yield state
                self._save(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> RecordState:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return RecordState()
        except ValueError:  # a torn or foreign file: start over rather than stop dispatching
            return RecordState()
        return RecordState(
            arrivals={item["task_id"]: Arrival(**item) for item in data.get("arrivals", [])},
            launches=[Launch(**item) for item in data.get("launches", [])],
        )

    def _save(self, state: RecordState) -> None:
        data = {"arrivals": as_json(list(state.arrivals.values())),
                "launches": as_json(state.launches)}
        # Write then rename: a reader never sees half a file.
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data))
        partial.replace(self.path)
