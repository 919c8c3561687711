"""Wake-up deliveries read as arrivals, and the dispatchers' shared record."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest

from tests.content_support import DATABASES
from vividly_tasks.dispatch.arrivals import NotAPushDelivery, arrival_from_push
from vividly_tasks.dispatch.dispatcher import Dispatcher, policy_from_settings
from vividly_tasks.dispatch.inputs import Arrival, ExecutionStates, Launch
from vividly_tasks.dispatch.record import DatabaseRecord, FileRecord
from vividly_tasks.settings import Settings


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


def test_the_record_keeps_arrivals_and_launches_across_processes(tmp_path: Path) -> None:
    record = FileRecord(tmp_path / "record.json", retention_seconds=3600)
    with record.locked(now=100.0) as state:
        state.add_arrival(Arrival("a", 90.0))
        state.add_arrival(Arrival("a", 95.0, due_at=500.0))  # a released copy, seen again
        state.launches.append(Launch("executions/x", 99.0, 2, 30))
    again = FileRecord(tmp_path / "record.json", retention_seconds=3600)
    with again.locked(now=200.0) as state:
        assert state.arrivals == {"a": Arrival("a", 90.0, 500.0)}
        assert state.launches == [Launch("executions/x", 99.0, 2, 30)]
    with again.locked(now=99.0 + 3600 + 1) as state:  # the launch is forgotten, not the eta
        assert list(state.arrivals) == ["a"]
        assert state.launches == []


def test_a_failed_decision_saves_nothing(tmp_path: Path) -> None:
    record = FileRecord(tmp_path / "record.json", retention_seconds=3600)
    with pytest.raises(RuntimeError), record.locked(now=1.0) as state:
        state.add_arrival(Arrival("a", 1.0))
        raise RuntimeError("the launch failed")
    with record.locked(now=1.0) as state:
        assert state.arrivals == {}


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'record.sqlite'}"


def test_a_database_record_serialises_dispatchers_on_separate_connections(
    database_url: str,
) -> None:
    """Two dispatchers (own engines, as on two machines) each record 25 launches, each read-
    decide-write under the record's lock: none is lost, so each decision saw the last one."""
    records = [DatabaseRecord(database_url, "vividly-job", retention_seconds=3600)
               for _ in range(2)]
    now = time.time()
    errors: list[BaseException] = []

    def dispatch(record: DatabaseRecord, name: str) -> None:
        try:
            for number in range(25):
                with record.locked(now) as state:
                    seen = len(state.launches)
                    time.sleep(0.002)  # a decision takes a moment: a racing writer would win
                    state.launches.append(Launch(f"{name}-{number}", now, 1, seen))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=dispatch, args=(record, f"d{n}"))
               for n, record in enumerate(records)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with records[0].locked(now) as state:
        launches = state.launches
    assert len(launches) == 50
    assert [launch.sized_for for launch in launches] == list(range(50))  # one after another
    other = DatabaseRecord(database_url, "another-job", retention_seconds=3600)
    with other.locked(now) as state:
        assert state.launches == []  # one record per job
    for record in (*records, other):
        record.dispose()


def test_the_settings_choose_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vividly_tasks.dispatch.dispatcher import build_dispatcher
    from vividly_tasks.settings import Settings

    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    common = {"DISPATCH_RUNNER": "local", "VIVIDLY_DATA_DIR": str(tmp_path)}
    assert isinstance(build_dispatcher(Settings(**common)).record, FileRecord)
    chosen = build_dispatcher(Settings(**common, DISPATCH_RECORD="database",
                                       DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    assert isinstance(chosen.record, DatabaseRecord) and chosen.record.key == "vividly-job"


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
    record = FileRecord(tmp_path / "record.json", retention_seconds=3600,
                        max_delay_seconds=86400)
    dispatcher = Dispatcher(policy=policy_from_settings(Settings()), launcher=_NoLauncher(),
                            backlog=None, record=record, clock=lambda: clock[0],
                            max_delay_seconds=86400)
    year_2999 = 32503680000.0
    dispatcher.note_arrival(Arrival("far", clock[0], due_at=year_2999))
    dispatcher.note_arrival(Arrival("future", year_2999))
    with record.locked(clock[0]) as state:
        assert state.arrivals["far"].due_at == clock[0] + 86400
        assert state.arrivals["future"].published_at == clock[0]
    clock[0] += 86400 + 3600 + 1
    with record.locked(clock[0]) as state:
        assert state.arrivals == {}


def test_an_old_record_with_a_far_eta_is_pruned_by_the_bound(tmp_path: Path) -> None:
    with FileRecord(tmp_path / "record.json", retention_seconds=3600).locked(0.0) as state:
        state.add_arrival(Arrival("far", 0.0, due_at=32503680000.0))  # written before the bound
    bounded = FileRecord(tmp_path / "record.json", retention_seconds=3600,
                         max_delay_seconds=86400)
    with bounded.locked(86400 + 3600 + 1) as state:
        assert state.arrivals == {}
