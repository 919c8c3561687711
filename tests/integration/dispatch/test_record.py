"""Wake-up deliveries read as arrivals, and the dispatchers' shared record: its rows, its
counts (the same as the decision's rule on a list), its pruning, and two dispatcher
processes writing it at once."""

from __future__ import annotations

import base64
import json
import math
import multiprocessing
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from vividly_tasks.dispatch.arrivals import NotAPushDelivery, arrival_from_push
from vividly_tasks.dispatch.decision import count_arrivals, proven_done
from vividly_tasks.dispatch.dispatcher import Dispatcher, policy_from_settings
from vividly_tasks.dispatch.errors import DispatchConfigError
from vividly_tasks.dispatch.inputs import Arrival, ExecutionStates, Launch
from vividly_tasks.dispatch.record import DatabaseRecord, FileRecord, SqlRecord
from vividly_tasks.dispatch.settings import DispatchSettings


def push_body(task_id: str, eta: str | None = None, *, publish_time: str) -> bytes:
    envelope = {"body": "[[], {}, {}]", "headers": {"id": task_id, "task": "t", "eta": eta}}
    data = base64.b64encode(json.dumps(envelope).encode()).decode()
    return json.dumps({
        "message": {"data": data, "attributes": {"task_id": task_id}, "messageId": "42",
                    "publishTime": publish_time},
        "subscription": "projects/p/subscriptions/vividly-wake-up",
    }).encode()


def test_a_push_delivery_names_the_task_its_publish_time_and_its_eta() -> None:
    arrival = arrival_from_push(
        push_body("abc", "2026-01-01T00:10:00+00:00",
                  publish_time="2026-01-01T00:00:00.123456789Z"), received_at=0.0)
    assert arrival.task_id == "abc"
    assert arrival.published_at == pytest.approx(1767225600.123456)
    assert arrival.due_at == 1767225600.0 + 600


def test_a_plain_message_is_an_arrival_due_now() -> None:
    body = json.dumps({"message": {"data": base64.b64encode(b"{}").decode(),
                                   "messageId": "m1"}}).encode()
    assert arrival_from_push(body, received_at=5.0) == Arrival("m1", 5.0, None)


@pytest.mark.parametrize("body", [b"nope", b"{}", b'{"message": 3}', b'{"message": {}}'])
def test_what_is_not_a_push_delivery_is_refused(body: bytes) -> None:
    with pytest.raises(NotAPushDelivery):
        arrival_from_push(body, received_at=0.0)


RECORDS = [pytest.param("file", id="file"), pytest.param("sqlite", id="database-sqlite"),
           pytest.param("postgresql", id="database-postgresql")]


@pytest.fixture(params=RECORDS)
def record_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A record's kind and where it lives: the file record, or the product's database."""
    if request.param == "file":
        return "file", str(tmp_path / "record.sqlite")
    if request.param == "postgresql":
        return "database", str(request.getfixturevalue("postgres_url"))
    return "database", f"sqlite:///{tmp_path / 'product.sqlite'}"


def open_record(spec: tuple[str, str], key: str = "vividly-job") -> SqlRecord:
    kind, where = spec
    if kind == "file":
        return FileRecord(Path(where), key=key, retention_seconds=3600)
    return DatabaseRecord(where, key, retention_seconds=3600)


def test_the_record_keeps_arrivals_and_launches_across_processes(
        record_spec: tuple[str, str]) -> None:
    record = open_record(record_spec)
    record.add_arrival(Arrival("a", 90.0))
    record.add_arrival(Arrival("a", 95.0, due_at=500.0))  # a released copy, seen again
    with record.locked(now=100.0) as locked:
        locked.add_launch(Launch("executions/x", 99.0, 2, 30))
    record.dispose()
    again = open_record(record_spec)  # as another process would
    assert again.arrivals() == [Arrival("a", 90.0, 500.0)]
    assert again.launches() == [Launch("executions/x", 99.0, 2, 30)]
    with again.locked(now=99.0 + 3600 + 1):  # the launch is forgotten, not the eta
        pass
    assert [a.task_id for a in again.arrivals()] == ["a"] and again.launches() == []
    with again.locked(now=500.0 + 3600 + 1):  # an hour after it was due
        pass
    assert again.arrivals() == []
    other = open_record(record_spec, key="another-job")
    other.add_arrival(Arrival("b", 1.0))
    assert [a.task_id for a in other.arrivals()] == ["b"] and again.arrivals() == []
    again.dispose()
    other.dispose()


def test_a_failed_decision_saves_nothing(record_spec: tuple[str, str]) -> None:
    record = open_record(record_spec)
    record.add_arrival(Arrival("a", 1.0))
    with pytest.raises(RuntimeError), record.locked(now=2.0) as locked:
        locked.forget_proven(idle_exit_proof=5.0, metric_proof=-math.inf)
        locked.add_launch(Launch("pending-1", 2.0, 1, 1))
        raise RuntimeError("the decision failed")
    assert record.arrivals() == [Arrival("a", 1.0)] and record.launches() == []
    record.dispose()


def test_the_records_counts_and_proofs_are_the_decisions_rule(
        record_spec: tuple[str, str]) -> None:
    """The record counts by index ranges what ``decision`` counts on a list: the same
    figures for arrivals due now, delayed, published before and after a sample, and the
    same arrivals forgotten as proven done, on every database."""
    rng = random.Random(29)
    now, lead = 10_000.0, 10.0
    arrivals = []
    for number in range(400):
        published = now - rng.uniform(0, 600)
        due = rng.choice([None, published + rng.uniform(-30, 900)])
        arrivals.append(Arrival(f"t{number}", published, due))
    record = open_record(record_spec)
    for arrival in arrivals:
        record.add_arrival(arrival)
    for sampled_at in (None, now - 300, now - 5):
        with record.locked(now) as locked:
            counts = locked.counts(now, lead, sampled_at)
        expected = count_arrivals(arrivals, now, lead, sampled_at)
        assert counts.ready + counts.delayed == len(arrivals)
        assert counts.next_ready_at == pytest.approx(expected.next_ready_at)
        assert replace(counts, next_ready_at=None) == replace(expected, next_ready_at=None)
        assert 0 < counts.ready < len(arrivals)
        with record.locked(now) as locked:  # stopped where the decision would not change
            capped = locked.counts(now, lead, sampled_at, undelivered=3, limit=7)
        assert (capped.ready, capped.delayed, capped.ready_after_sample) == (
            min(expected.ready, 7), min(expected.delayed, 7),
            min(expected.ready_after_sample, 7))
        assert capped.delayed_in_sample == min(expected.delayed_in_sample, 3)
    by_exit, by_metric = now - 200, now - 450
    with record.locked(now) as locked:
        forgotten = locked.forget_proven(idle_exit_proof=by_exit, metric_proof=by_metric)
    left = {a.task_id for a in record.arrivals()}
    assert left == {a.task_id for a in arrivals
                    if not proven_done(a, idle_exit_proof=by_exit, metric_proof=by_metric)}
    assert forgotten == len(arrivals) - len(left) > 0 and left
    record.dispose()


def _dispatch_process(spec: tuple[str, str], name: str, ready: multiprocessing.Event,
                      ) -> None:
    """One dispatcher process: 400 arrivals and 20 decisions, interleaved; each decision
    reads how many launches it sees, takes a moment, and reserves one sized for that."""
    record = open_record(spec)
    now = time.time()
    ready.wait(timeout=60)
    for number in range(400):
        record.add_arrival(Arrival(f"{name}-{number}", now))
        if number % 20 == 0:
            with record.locked(now) as locked:
                seen = len(locked.recent_launches(since=0.0))
                time.sleep(0.002)  # a racing writer would win here without the lock
                locked.add_launch(Launch(f"{name}-launch-{number}", now, 1, seen))
    record.dispose()


def test_two_dispatcher_processes_lose_nothing_and_decide_one_after_the_other(
        record_spec: tuple[str, str]) -> None:
    """Two processes on their own connections write arrivals (no lock) and decisions (the
    lock) at once: every arrival is there, and each decision saw every earlier launch."""
    open_record(record_spec).dispose()  # set up once, so the race is about the rows
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    processes = [context.Process(target=_dispatch_process, args=(record_spec, name, ready))
                 for name in ("d0", "d1")]
    for process in processes:
        process.start()
    ready.set()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    record = open_record(record_spec)
    assert len(record.arrivals()) == 800
    launches = record.launches()
    assert len(launches) == 40
    assert sorted(launch.sized_for for launch in launches) == list(range(40))
    record.dispose()


def test_the_settings_choose_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vividly_tasks.dispatch.dispatcher import build_dispatcher

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    common = {"DISPATCH_RUNNER": "local", "VIVIDLY_DATA_DIR": str(tmp_path)}
    chosen = build_dispatcher(DispatchSettings(**common)).record
    assert isinstance(chosen, FileRecord)
    assert chosen.path == tmp_path / "dispatch" / "record.sqlite"
    chosen = build_dispatcher(DispatchSettings(**common, DISPATCH_RECORD="database",
                                       DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}")
                              ).record
    assert isinstance(chosen, DatabaseRecord) and chosen.key == "vividly-job"


def test_a_file_that_is_not_a_record_is_a_clear_error(tmp_path: Path) -> None:
    """The record of earlier versions was a JSON document at the same kind of path."""
    path = tmp_path / "record.json"
    path.write_text('{"arrivals": [], "launches": []}')
    with pytest.raises(DispatchConfigError, match="not the dispatcher's record"):
        FileRecord(path, retention_seconds=3600).add_arrival(Arrival("a", 1.0))


class _NoLauncher:
    def executions(self) -> ExecutionStates:
        return ExecutionStates([], [])

    def launch(self, task_count: int) -> str:
        raise AssertionError("nothing is due")


def test_a_forged_eta_or_publish_time_cannot_keep_an_arrival_in_the_record(
        tmp_path: Path) -> None:
    """An eta in 2999 counts as due ``max_delay`` after its publish time, and a publish time
    in the future as now: the arrival is gone ``max_delay`` plus the retention later."""
    clock = [1_000_000.0]
    record = FileRecord(tmp_path / "record.sqlite", retention_seconds=3600)
    dispatcher = Dispatcher(policy=policy_from_settings(DispatchSettings()), launcher=_NoLauncher(),
                            backlog=None, record=record, clock=lambda: clock[0],
                            max_delay_seconds=86400)
    year_2999 = 32503680000.0
    dispatcher.note_arrival(Arrival("far", clock[0], due_at=year_2999))
    dispatcher.note_arrival(Arrival("future", year_2999))
    assert {a.task_id: a for a in record.arrivals()} == {
        "far": Arrival("far", clock[0], clock[0] + 86400),
        "future": Arrival("future", clock[0]),
    }
    clock[0] += 86400 + 3600 + 1
    assert dispatcher.decide_once()["action"] == "none"
    assert record.arrivals() == []
