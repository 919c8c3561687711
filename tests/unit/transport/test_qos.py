"""The channel's QoS (vividly_tasks/transport/qos.py) on its own: the real QoS, prefetch room,
lease book and pull-ahead, with a recorder where Pub/Sub calls would go and a clock of the
test's own for the leases. No emulator."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from vividly_tasks.transport import receipts, tracing
from vividly_tasks.transport.leases import Lease, LeaseBook
from vividly_tasks.transport.qos import QoS

SUBSCRIPTION = "projects/p/subscriptions/q"


class Recorder:
    """Stands in for the background calls (background.py): what would reach Pub/Sub."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def ack(self, subscription: str, ack_id: str) -> None:
        self.calls.append(("ack", ack_id))

    def set_deadline(self, subscription: str, ack_id: str, seconds: int) -> None:
        self.calls.append(("deadline", ack_id, seconds))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Connection:
    def __init__(self, **options: Any) -> None:
        self.lost = False
        self.options = {"pull_ahead": 0, "pull_ahead_hold_seconds": 1.0, **options}

    def option(self, name: str, kind: type[Any]) -> Any:
        return kind(self.options[name])


class Host:
    """The channel as the QoS sees it (``QoSHost``): it records what the QoS asks of it."""

    max_delivery_attempts = 5

    def __init__(self, **options: Any) -> None:
        self.recorder = Recorder()
        self.clock = Clock()
        book = LeaseBook(self.recorder, clock=self.clock, keep_alive=False)  # type: ignore[arg-type]
        self.pubsub = SimpleNamespace(background=self.recorder, leases=book)
        self.connection = Connection(**options)
        self.delivered: list[Any] = []
        self.refills = 0
        self.dead_letters: list[tuple[str, str]] = []
        self.renewed: list[str] = []

    def deliver(self, delivery: Any) -> None:
        self.delivered.append(delivery)

    def refill_soon(self) -> None:
        self.refills += 1

    def dead_letter(self, lease: Lease, reason: str) -> None:
        self.dead_letters.append((lease.ack_id, reason))

    def renew(self, lease: Lease) -> bool:
        self.renewed.append(lease.ack_id)
        return True


@pytest.fixture
def host() -> Host:
    return Host()


@pytest.fixture
def qos(host: Host) -> QoS:
    return QoS(host, prefetch_count=2)  # type: ignore[arg-type]


def lease(host: Host, tag: str, **fields: Any) -> Lease:
    values: dict[str, Any] = {
        "ack_deadline_seconds": 30, "max_lease_seconds": 3600.0,
        "original": SimpleNamespace(attributes={"task": "lessons.make"}),
    }
    values.update(fields)
    return Lease(SUBSCRIPTION, f"ack-{tag}", f"id-{tag}", host.clock(), **values)


def take(qos: QoS, host: Host, tag: str, **fields: Any) -> Lease:
    """A message leased and handed to the consumer, as channel.py and Kombu do it."""
    leased = lease(host, tag, **fields)
    qos.leased(tag, leased)
    qos.admit(tag, ("q", {"tag": tag}, None))
    qos.append(f"message {tag}", tag)
    return leased


def is_settled(qos: QoS, host: Host, tag: str) -> bool:
    qos._flush()
    return host.pubsub.leases.get(tag) is None and tag not in qos._delivered


# --- the prefetch room --------------------------------------------------------------------
def test_can_consume_until_the_prefetch_count_is_delivered_and_again_after_a_settle(
    qos: QoS, host: Host
) -> None:
    take(qos, host, "a")
    assert qos.can_consume()
    take(qos, host, "b")
    assert not qos.can_consume()
    qos.ack("a")
    assert qos.can_consume()
    assert qos.can_consume_max_estimate() == 1


def test_pulls_reserve_the_room_left_and_give_back_what_they_did_not_fill(
    qos: QoS, host: Host
) -> None:
    take(qos, host, "a")
    assert qos.reserve(1, default_limit=100) == 1  # prefetch 2, one leased
    assert qos.reserve(1, default_limit=100) == 0  # that one is reserved by a Pull in flight
    qos.unreserve(1)  # the Pull came back empty
    assert qos.reserve(1, default_limit=100) == 1
    qos.unreserve(1)
    qos.ack("a")
    # Two consumers share the room: one whose Pull already holds 1 gets no more.
    assert qos.reserve(2, holding=1, default_limit=100) == 0
    assert qos.reserve(2, default_limit=100) == 1
    qos.prefetch_count = 0  # no prefetch count: the channel's own limit
    assert qos.reserve(1, default_limit=3) == 2


def test_beyond_the_prefetch_count_messages_are_held_and_a_settle_hands_over_the_next() -> None:
    host = Host(pull_ahead=8)
    qos = QoS(host, prefetch_count=1)  # type: ignore[arg-type]
    for tag in ("a", "b", "c"):
        qos.leased(tag, lease(host, tag))
        qos.admit(tag, ("q", {"tag": tag}, None))
    assert [payload["tag"] for _, payload, _ in host.delivered] == ["a"]
    assert len(qos.pull_ahead) == 2
    assert len(qos.room) == 3  # the held ones count against the room too
    qos.ack("a")
    assert [payload["tag"] for _, payload, _ in host.delivered] == ["a", "b"]
    qos.prefetch_count = 2
    qos.prefetch_changed()  # Celery raised the prefetch count (an ETA task)
    assert [payload["tag"] for _, payload, _ in host.delivered] == ["a", "b", "c"]
    assert len(qos.pull_ahead) == 0


def test_held_messages_go_back_when_their_consumer_stops_and_the_delivered_stay() -> None:
    host = Host(pull_ahead=8)
    qos = QoS(host, prefetch_count=1)  # type: ignore[arg-type]
    for tag in ("a", "b"):
        qos.leased(tag, lease(host, tag))
        qos.admit(tag, ("q", {"tag": tag}, None))
    qos.release_queue("q")
    assert host.recorder.calls == [("deadline", "ack-b", 0)]
    assert host.pubsub.leases.get("b") is None
    assert host.pubsub.leases.get("a") is not None
    assert len(qos.room) == 1


def test_a_held_message_that_finds_no_slot_in_time_is_released() -> None:
    host = Host(pull_ahead=8, pull_ahead_hold_seconds=0.05)
    qos = QoS(host, prefetch_count=1)  # type: ignore[arg-type]
    for tag in ("a", "b"):
        qos.leased(tag, lease(host, tag))
        qos.admit(tag, ("q", {"tag": tag}, None))
    deadline = time.monotonic() + 5
    while not host.recorder.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert host.recorder.calls == [("deadline", "ack-b", 0)]
    assert len(qos.room) == 1 and len(qos.pull_ahead) == 0


# --- the leases ---------------------------------------------------------------------------
def test_a_lease_is_extended_every_third_of_its_deadline_once_per_step(
    qos: QoS, host: Host
) -> None:
    take(qos, host, "a")  # ack deadline 30 s: a step every 10 s
    book = host.pubsub.leases
    host.clock.now += 9.9
    book.extend_due()
    assert host.recorder.calls == []
    host.clock.now += 0.1
    book.extend_due()
    book.extend_due()
    assert host.recorder.calls == [("deadline", "ack-a", 30)]
    host.clock.now += 10
    book.extend_due()
    assert host.recorder.calls == [("deadline", "ack-a", 30)] * 2


def test_a_lease_held_past_max_lease_seconds_is_no_longer_extended_and_its_ack_sends_nothing(
    qos: QoS, host: Host
) -> None:
    take(qos, host, "a", max_lease_seconds=25.0)
    book = host.pubsub.leases
    host.clock.now += 10
    book.extend_due()
    host.clock.now += 16  # 26 s after receipt
    book.extend_due()
    assert host.recorder.calls == [("deadline", "ack-a", 30)]  # not extended again
    assert book.get("a") is None  # Pub/Sub will redeliver it
    qos.ack("a")  # the task finished late: its ack id is gone
    assert host.recorder.calls == [("deadline", "ack-a", 30)]
    assert is_settled(qos, host, "a") and len(qos.room) == 0


def test_a_settled_message_is_never_extended_again(qos: QoS, host: Host) -> None:
    take(qos, host, "a")
    qos.ack("a")
    host.clock.now += 60
    host.pubsub.leases.extend_due()
    assert host.recorder.calls == [("ack", "ack-a")]


# --- settling -----------------------------------------------------------------------------
def test_an_ack_acks_once_and_clears_every_part_of_the_ledger(qos: QoS, host: Host) -> None:
    take(qos, host, "a")
    take(qos, host, "b")
    qos.ack("a")
    assert host.recorder.calls == [("ack", "ack-a")]
    assert is_settled(qos, host, "a") and not is_settled(qos, host, "b")
    assert len(qos.room) == 1
    assert host.refills == 1


def test_a_requeue_is_one_nack_of_the_same_message(qos: QoS, host: Host) -> None:
    take(qos, host, "a")
    qos.reject("a", requeue=True)
    assert host.recorder.calls == [("deadline", "ack-a", 0)]
    assert host.dead_letters == []
    assert is_settled(qos, host, "a") and len(qos.room) == 0


def test_a_reject_dead_letters_once_with_the_reason_given_or_a_default(
    qos: QoS, host: Host
) -> None:
    take(qos, host, "a")
    take(qos, host, "b")
    qos.set_dead_letter_reason("a", "lesson topic is empty")
    qos.reject("a")
    qos.reject("b")
    assert host.dead_letters[0] == ("ack-a", "lesson topic is empty")
    assert host.dead_letters[1][0] == "ack-b"
    assert "rejected without requeue" in host.dead_letters[1][1]
    assert "lessons.make" in host.dead_letters[1][1]
    assert host.recorder.calls == []  # the dead-letter move acks; nothing else is sent
    assert is_settled(qos, host, "a") and is_settled(qos, host, "b")
    assert len(qos.room) == 0 and host.refills == 2


def test_a_second_settle_of_the_same_message_sends_nothing(qos: QoS, host: Host) -> None:
    take(qos, host, "a")
    qos.ack("a")
    qos.ack("a")
    qos.reject("a", requeue=True)
    qos.reject("a")
    assert host.recorder.calls == [("ack", "ack-a")]
    assert host.dead_letters == []
    assert len(qos.room) == 0
    assert qos.reserve(1, default_limit=100) == 2  # the room was freed once, not twice


def test_each_settle_ends_the_receive_span_with_its_outcome(
    qos: QoS, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[tuple[Any, str, dict[str, Any]]] = []
    spans = SimpleNamespace(settled=lambda span, outcome, **details:
                            ended.append((span, outcome, details)))
    monkeypatch.setattr(tracing, "hooks", spans)
    for tag in ("a", "b", "c"):
        take(qos, host, tag).span = f"span {tag}"
    qos.ack("a")
    qos.reject("b", requeue=True)
    qos.reject("c")
    qos.ack("a")
    assert [(span, outcome) for span, outcome, _ in ended] == [
        ("span a", "ack"), ("span b", "nack"), ("span c", "dead letter")]
    assert ended[1][2] == {"deadline_seconds": 0}
    assert "rejected without requeue" in ended[2][2]["reason"]


# --- closing ------------------------------------------------------------------------------
def test_closing_releases_every_unsettled_message_once_a_delayed_one_near_its_eta(
    qos: QoS, host: Host
) -> None:
    counts = receipts.for_this_process()
    before = counts.released_delayed
    take(qos, host, "a")
    take(qos, host, "later", eta=time.time() + 120)
    qos.restore_unacked_once()
    qos.restore_unacked_once()  # and Kombu's close calls it again
    calls = sorted(host.recorder.calls)
    assert calls[0] == ("deadline", "ack-a", 0)
    assert calls[1][:2] == ("deadline", "ack-later") and 118 <= calls[1][2] <= 120
    assert len(calls) == 2
    assert counts.released_delayed == before + 1
    assert len(qos.room) == 0
    assert host.pubsub.leases.get("a") is None and host.pubsub.leases.get("later") is None


def test_closing_renews_an_unstarted_message_one_delivery_short_of_the_dead_letter_limit(
    qos: QoS, host: Host
) -> None:
    take(qos, host, "fresh", delivery_attempt=1)
    take(qos, host, "worn", delivery_attempt=4)  # the limit is 5
    take(qos, host, "started", delivery_attempt=4)
    qos.note_started("started")  # a failed attempt when released: it may dead-letter
    qos.restore_unacked_once()
    assert host.renewed == ["ack-worn"]
    assert sorted(host.recorder.calls) == [("deadline", "ack-fresh", 0),
                                           ("deadline", "ack-started", 0)]


def test_after_a_lost_connection_closing_keeps_the_running_leases_and_releases_the_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = Host(pull_ahead=8)
    qos = QoS(host, prefetch_count=1)  # type: ignore[arg-type]
    for tag in ("running", "held"):
        qos.leased(tag, lease(host, tag))
        qos.admit(tag, ("q", {"tag": tag}, None))
    host.connection.lost = True
    with caplog.at_level(logging.INFO, logger="vividly_tasks.transport.qos"):
        qos.restore_unacked_once()
        qos.restore_unacked_once()  # Kombu's close calls it again: once is the close
    assert host.recorder.calls == [("deadline", "ack-held", 0)]
    assert [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()] \
        == ["connection lost: keeping 1 lease(s) of this channel"]
    assert host.pubsub.leases.get("running") is not None
    qos.ack("running")  # the task finishes on the old channel
    assert host.recorder.calls[-1] == ("ack", "ack-running")


def test_recover_gives_everything_back_at_once(qos: QoS, host: Host) -> None:
    take(qos, host, "a")
    take(qos, host, "later", eta=time.time() + 120)
    assert qos.restore_unacked() == []
    assert sorted(host.recorder.calls) == [("deadline", "ack-a", 0),
                                           ("deadline", "ack-later", 0)]
    assert len(qos._delivered) == 0 and len(qos.room) == 0
    assert qos.can_consume()
