"""What a wake-up's bookkeeping costs with many arrivals recorded: the dispatcher's record.

The record is filled with ``--arrivals`` arrivals none of which is proven done (the worst
case: half published in the last hour and due now, half delayed by up to a day), then times

- a push's bookkeeping: ``Dispatcher.note_arrival`` (one row written);
- a decision's: ``Dispatcher.decide_once`` with a runner that lists nothing and launches at
  once (the lock, pruning, the counts, the launches, a reservation when one is due),

for the file record and the database record (SQLite here; ``--database-url`` for PostgreSQL).
Prints one JSON line per record: median and p95 in milliseconds.

    .venv/bin/python -m bench.dispatch_record --arrivals 100000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

from vividly_tasks.dispatch.dispatcher import Dispatcher, policy_from_settings
from vividly_tasks.dispatch.inputs import Arrival, ExecutionStates
from vividly_tasks.dispatch.record import DatabaseRecord, FileRecord, SqlRecord
from vividly_tasks.dispatch.schema import DispatchArrivalRow
from vividly_tasks.dispatch.settings import DispatchSettings

JOB = "vividly-job"


class InstantRunner:
    """Lists no execution; a launch is named at once (the bench times the record, not a
    runner)."""

    def __init__(self) -> None:
        self.count = 0

    def executions(self) -> ExecutionStates:
        return ExecutionStates([], [])

    def launch(self, task_count: int) -> str:
        self.count += 1
        return f"bench-{self.count}"


def fill(record: SqlRecord, count: int, now: float) -> None:
    """``count`` arrivals in bulk (the filling is not what is measured)."""
    rng = random.Random(7)  # noqa: S311 - a repeatable spread, not a secret
    rows = []
    for number in range(count):
        published = now - rng.uniform(0, 3500)
        due = published + rng.uniform(60, 86400) if number % 2 else None
        rows.append({"job": JOB, "task_id": f"filled-{number}", "published_at": published,
                     "due_at": due, "deliverable_at": max(published, due or published)})
    record.arrivals()  # creates the tables
    with record.engine.begin() as connection:
        for start in range(0, len(rows), 10_000):
            connection.execute(insert(DispatchArrivalRow), rows[start:start + 10_000])
    if record.engine.dialect.name == "postgresql":
        # Autovacuum analyses a table this size within a minute of the writes; without the
        # statistics the planner scans the table instead of the index ranges.
        with record.engine.begin() as connection:
            connection.execute(text("ANALYZE dispatch_arrivals"))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2)}


def measure(name: str, record: SqlRecord, arrivals: int, pushes: int,
            decisions: int) -> dict[str, object]:
    now = time.time()
    fill(record, arrivals, now)
    dispatcher = Dispatcher(policy=policy_from_settings(DispatchSettings()),
                            launcher=InstantRunner(), backlog=None, record=record)
    push_times = []
    for number in range(pushes):
        started = time.perf_counter()
        dispatcher.note_arrival(Arrival(f"push-{number}", time.time()))
        push_times.append(time.perf_counter() - started)
    decision_times = []
    for _ in range(decisions):
        started = time.perf_counter()
        dispatcher.decide_once(trigger="bench")
        decision_times.append(time.perf_counter() - started)
    known = len(record.arrivals())
    record.dispose()
    return {"record": name, "arrivals_recorded": known,
            "push": percentiles(push_times), "decision": percentiles(decision_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrivals", type=int, default=100_000)
    parser.add_argument("--pushes", type=int, default=300)
    parser.add_argument("--decisions", type=int, default=60)
    parser.add_argument("--database-url", help="also the database record on this database "
                        "(an empty PostgreSQL database, migrated by the bench)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        records: list[tuple[str, SqlRecord]] = [
            ("file", FileRecord(Path(folder) / "record.sqlite", key=JOB,
                                retention_seconds=3600)),
            ("database (SQLite)", DatabaseRecord(f"sqlite:///{folder}/product.sqlite", JOB,
                                                 retention_seconds=3600)),
        ]
        if args.database_url:
            records.append(("database", DatabaseRecord(args.database_url, JOB,
                                                       retention_seconds=3600)))
        for name, record in records:
            print(json.dumps(measure(name, record, args.arrivals, args.pushes,
                                     args.decisions)), flush=True)


if __name__ == "__main__":
    main()
