"""Pull-ahead (vividly_tasks/transport/pull_ahead.py): messages leased beyond the prefetch count
while a backlog exists, held in the transport until a slot frees, released when none frees in
time. The sizing and hand-over on their own, then against the emulator, directly and behind a
20 ms round trip (harness/latency_proxy.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Message, Queue

from harness.latency_proxy import ProxyProcess
from harness.services import ServiceProcess
from vividly_tasks.transport.pull_ahead import PAUSE_AFTER_EXPIRY_SECONDS, PullAhead

PREFIX = "t-"


def ahead(*, per_slot: int = 8, hold_seconds: float = 1.0,
          released: list[list[str]] | None = None) -> PullAhead:
    return PullAhead(per_slot=per_slot, hold_seconds=hold_seconds,
                     release=(released if released is not None else []).append)


def learned(pull: PullAhead, *, task_seconds: float, pull_seconds: float) -> PullAhead:
    pull.task_seconds, pull.pull_seconds = task_seconds, pull_seconds
    pull.note_pull(1, 1, pull_seconds)
    return pull


# --- sizing -------------------------------------------------------------------------------
def test_nothing_is_held_ahead_before_the_averages_exist_or_without_a_backlog() -> None:
    pull = ahead()
    assert pull.allowance(2) == 0  # nothing learned yet
    learned(pull, task_seconds=0.005, pull_seconds=0.025)
    assert pull.allowance(2) > 0
    pull.note_pull(2, 0, 1.1)  # an empty Pull: no backlog
    assert pull.allowance(2) == 0
    pull.note_pull(2, 1, 0.4)  # a message reached an idle worker: no backlog either
    assert pull.allowance(2) == 0
    pull.note_pull(1, 1, 0.025)  # a full Pull: a backlog
    assert pull.allowance(2) > 0
    pull.note_pull(1, 1, 0.4)  # full, but it waited on the server for a publish: idle
    assert pull.allowance(2) == 0
    assert ahead(per_slot=0).allowance(2) == 0  # turned off


def test_held_ahead_are_sized_by_the_round_trip_the_slots_and_the_hold() -> None:
    # Slots free every 25 ms: a 25 ms Pull needs 1 (+1) ahead; 2.5 ms needs the cap (4/slot).
    assert learned(ahead(), task_seconds=0.05, pull_seconds=0.025).allowance(2) == 2
    assert learned(ahead(per_slot=4), task_seconds=0.005, pull_seconds=0.025).allowance(2) == 8
    # Long tasks: a held message would not start within half the hold, so none is held.
    assert learned(ahead(), task_seconds=10.0, pull_seconds=0.025).allowance(2) == 0
    assert learned(ahead(), task_seconds=0.8, pull_seconds=0.025).allowance(2) == 1


# --- hand-over ----------------------------------------------------------------------------
def test_the_consumer_gets_at_most_its_slots_and_a_settle_hands_over_the_next() -> None:
    pull = ahead()
    assert pull.admit("a", "q", "A", 2) == ["A"]
    assert pull.admit("b", "q", "B", 2) == ["B"]
    assert pull.admit("c", "q", "C", 2) == []  # held
    assert pull.admit("d", "q", "D", 2) == []
    assert len(pull) == 2
    assert pull.settled("a", 2) == ["C"]  # in the order they came
    assert pull.due(3) == ["D"]  # the prefetch count grew (Celery's ETA tasks)
    assert pull.settled("b", 3) == []
    assert pull.task_seconds is not None


def test_a_held_message_without_a_free_slot_is_released_and_pulling_ahead_pauses() -> None:
    released: list[list[str]] = []
    pull = learned(ahead(hold_seconds=0.2, released=released), task_seconds=0.005,
                   pull_seconds=0.025)
    pull.admit("running", "q", "R", 1)
    pull.admit("held", "q", "H", 1)
    time.sleep(0.5)
    assert released == [["held"]]
    assert len(pull) == 0
    assert pull.allowance(1) == 0  # paused
    assert pull.settled("running", 1) == []  # the released one is never handed over
    assert 10 * pull.hold_seconds <= PAUSE_AFTER_EXPIRY_SECONDS


def test_cancel_and_close_take_the_held_messages_of_a_queue_or_all() -> None:
    pull = ahead()
    pull.admit("a", "q1", "A", 1)
    pull.admit("b", "q1", "B", 1)
    pull.admit("c", "q2", "C", 1)
    assert pull.take("q1") == ["b"]
    assert pull.take() == ["c"]
    assert pull.settled("a", 1) == []


# --- against the emulator -----------------------------------------------------------------
@pytest.fixture
def cloud_distance(pubsub_emulator: ServiceProcess, pubsub_project: str,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[ProxyProcess]:
    """Every Pub/Sub call of this test pays a 20 ms round trip."""
    with ProxyProcess(f"127.0.0.1:{pubsub_emulator.port}", 20.0) as proxy:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.address)
        yield proxy


def publish_numbers(connection: Connection, queue: Queue, count: int) -> None:
    with connection.Producer() as producer:
        for number in range(count):
            producer.publish(number, routing_key=queue.name, declare=[queue],
                             serializer="json")


def test_at_cloud_distance_each_message_runs_once_and_the_consumer_never_holds_more_than_its_prefetch(  # noqa: E501
    broker_url: str, cloud_distance: ProxyProcess
) -> None:
    count, prefetch = 80, 2
    queue = Queue("ahead-drain", routing_key="ahead-drain")
    got: list[Any] = []
    unacked: list[Message] = []
    most_unacked = most_leased = 0
    with Connection(broker_url, transport_options={"prefix": PREFIX}) as connection:
        publish_numbers(connection, queue, count)

        def on_message(body: Any, message: Message) -> None:
            nonlocal most_unacked, most_leased
            got.append(body)
            unacked.append(message)
            most_unacked = max(most_unacked, len(unacked))
            most_leased = max(most_leased, len(message.channel.qos.room))

        with Consumer(connection, [queue], callbacks=[on_message], accept=["json"],
                      prefetch_count=prefetch):
            deadline = time.monotonic() + 60
            while len(got) < count and time.monotonic() < deadline:
                try:
                    connection.drain_events(timeout=1)
                except TimeoutError:
                    continue
                time.sleep(0.003)  # the work
                for message in unacked:
                    message.ack()
                unacked.clear()
            for _ in range(2):  # nothing more comes
                with contextlib.suppress(TimeoutError):
                    connection.drain_events(timeout=1)
    assert sorted(got) == list(range(count))  # each once: none lost, none twice
    assert most_unacked <= prefetch  # the consumer saw no more than its prefetch
    assert most_leased > prefetch  # and the transport held some ahead, hiding round trips


def test_a_message_held_ahead_that_finds_no_free_slot_goes_to_another_worker_within_seconds(
    broker_url: str,
) -> None:
    count, quick = 30, 10
    queue = Queue("ahead-stuck", routing_key="ahead-stuck")
    options = {"prefix": PREFIX, "pull_ahead_hold_seconds": 1.0}
    first: list[Any] = []
    second: list[Any] = []
    stuck: list[Message] = []
    held_by_first = 0
    with Connection(broker_url, transport_options=options) as one, \
            Connection(broker_url, transport_options=options) as other:
        publish_numbers(one, queue, count)

        def on_first(body: Any, message: Message) -> None:
            nonlocal held_by_first
            first.append(body)
            held_by_first = max(held_by_first, len(message.channel.qos.pull_ahead))
            if len(first) <= quick:
                message.ack()  # quick tasks: the averages say a slot frees every few ms
            else:
                stuck.append(message)  # then a long task: no slot frees

        def on_second(body: Any, message: Message) -> None:
            second.append(body)
            message.ack()

        with Consumer(one, [queue], callbacks=[on_first], accept=["json"], prefetch_count=1):
            deadline = time.monotonic() + 20
            while not stuck and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    one.drain_events(timeout=1)
            assert stuck, "the first consumer never got its long task"
            held_by_first = max(held_by_first, len(stuck[0].channel.qos.pull_ahead))
            started = time.monotonic()
            with Consumer(other, [queue], callbacks=[on_second], accept=["json"],
                          prefetch_count=1):
                while len(second) < count - len(first) and time.monotonic() - started < 20:
                    with contextlib.suppress(TimeoutError):
                        other.drain_events(timeout=1)
                waited = time.monotonic() - started
                for _ in range(3):  # the first consumer is still busy: it gets nothing more
                    with contextlib.suppress(TimeoutError):
                        one.drain_events(timeout=0.3)
            stuck[0].ack()
    assert held_by_first > 0  # the first worker had pulled ahead of its long task
    assert len(first) == quick + 1
    assert sorted(first + second) == list(range(count))  # none lost, none run twice
    assert waited < 8  # released after the 1 s hold, not after the 60 s ack deadline
