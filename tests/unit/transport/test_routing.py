"""Which of a topic's messages a queue keeps (vividly_tasks/transport/routing.py): the default
exchange, direct, topic and fanout bindings, bindings recorded by other processes, and when an
unmatched copy makes the route read those records again. The route and the records reader are
the real classes; only the Pub/Sub admin call under the reader is scripted."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from vividly_tasks.transport import routing
from vividly_tasks.transport.bindings import BindingRecords, record_path
from vividly_tasks.transport.provisioning import SubscriptionSpec
from vividly_tasks.transport.routing import (
    CLOCK_MARGIN_SECONDS,
    QueueRoute,
    fanout_key_matches,
    key_matches,
    published_at,
    topic_key_matches,
)

PROJECT = "routing-test"
SUBSCRIPTION = "vividly-emails"


def spec() -> SubscriptionSpec:
    return SubscriptionSpec(
        project=PROJECT, subscription_id=SUBSCRIPTION, topic_id="vividly-shop-events",
        ack_deadline_seconds=60, max_delivery_attempts=5, retry_min_backoff_seconds=1.0,
        retry_max_backoff_seconds=60.0,
    )


class ScriptedAdmin:
    """``list_topic_subscriptions`` answering with the binding records the test has made."""

    def __init__(self) -> None:
        self.records: list[str] = []
        self.calls = 0

    def record(self, kind: str, key: str) -> None:
        self.records.append(record_path(PROJECT, SUBSCRIPTION, (kind, key)))

    def list_topic_subscriptions(self, request: dict[str, Any], timeout: float) -> list[str]:
        self.calls += 1
        assert request["topic"].endswith(f"/topics/{SUBSCRIPTION}~bindings")
        return list(self.records)


@pytest.fixture
def admin() -> ScriptedAdmin:
    return ScriptedAdmin()


@pytest.fixture
def records(admin: ScriptedAdmin) -> BindingRecords:
    return BindingRecords(SimpleNamespace(publisher=admin), PROJECT)  # type: ignore[arg-type]


# --- the matching rules ------------------------------------------------------------------------
@pytest.mark.parametrize(("pattern", "key", "matches"), [
    ("email.#", "email", True),
    ("email.#", "email.welcome", True),
    ("email.#", "email.welcome.de", True),
    ("email.#", "emails.welcome", False),
    ("email.*", "email.welcome", True),
    ("email.*", "email", False),
    ("email.*", "email.welcome.de", False),
    ("*.welcome", "email.welcome", True),
    ("*.welcome", "welcome", False),
    ("#.de", "email.welcome.de", True),
    ("#.de", "de", True),
    ("#.de", "email.en", False),
    ("a.#.z", "a.z", True),
    ("a.#.z", "a.b.c.z", True),
    ("a.#.z", "a.b.c", False),
    ("#", "", True),
    ("#", "anything.at.all", True),
    ("orders", "orders", True),
    ("orders", "orders.new", False),
])
def test_topic_patterns_follow_amqp(pattern: str, key: str, matches: bool) -> None:
    assert topic_key_matches(pattern, key) is matches


@pytest.mark.parametrize(("kind", "binding_key", "routing_key", "matches"), [
    ("direct", "orders", "orders", True),
    ("direct", "orders", "Orders", False),
    ("direct", "orders.#", "orders.new", False),  # no patterns on a direct exchange
    ("direct", "", "", True),
    ("topic", "orders.*", "orders.new", True),
    ("topic", "orders.*", "refunds.new", False),
    ("fanout", "", "whatever", True),  # a plain fanout binding takes everything
    ("fanout", "#", "whatever", True),
    ("fanout", "worker.#", "worker.heartbeat", True),  # Kombu's fanout_patterns
    ("fanout", "worker.#", "task.succeeded", False),
])
def test_the_exchange_type_decides_how_a_key_matches(
    kind: str, binding_key: str, routing_key: str, matches: bool
) -> None:
    assert key_matches(kind, binding_key, routing_key) is matches


def test_a_fanout_key_is_a_pattern_only_when_it_is_not_empty_nor_hash() -> None:
    assert fanout_key_matches("", "") and fanout_key_matches("#", "a.b")
    assert fanout_key_matches("worker.*", "worker.online")
    assert not fanout_key_matches("worker.*", "worker.online.now")


# --- a queue's route ---------------------------------------------------------------------------
def test_the_default_exchange_routes_by_queue_name_whatever_the_bindings() -> None:
    route = QueueRoute("emails", spec(), kind="topic", routing_keys={"#"})
    assert route.accepts("", "emails")
    assert not route.accepts("", "orders")  # "#" does not reach past the default exchange


def test_a_queue_keeps_what_one_of_its_own_bindings_matches() -> None:
    route = QueueRoute("emails", spec(), kind="topic", routing_keys={"email.#", "*.urgent"})
    assert route.accepts("shop-events", "email.welcome")
    assert route.accepts("shop-events", "refund.urgent")
    assert not route.accepts("shop-events", "refund.later")
    direct = QueueRoute("orders", spec(), kind="direct", routing_keys={"orders"})
    assert direct.accepts("shop", "orders")
    assert not direct.accepts("shop", "orders.new")


def test_a_queue_with_no_binding_known_anywhere_keeps_every_message() -> None:
    route = QueueRoute("legacy", spec(), kind="direct")
    assert route.accepts("shop", "anything") and route.accepts("shop", "")


def test_an_empty_set_of_own_bindings_is_not_the_same_as_none() -> None:
    """Bindings made here and all removed: nothing matches (not: everything, as with none)."""
    route = QueueRoute("emails", spec(), kind="direct", routing_keys=set())
    assert not route.accepts("shop", "orders")


def test_bindings_recorded_elsewhere_match_with_their_own_exchange_type() -> None:
    route = QueueRoute("emails", spec(), kind="direct", routing_keys={"orders"},
                       shared=frozenset({("topic", "email.#"), ("fanout", "audit.*")}))
    assert route.accepts("shop", "orders")
    assert route.accepts("shop-events", "email.receipt")  # topic rule for the recorded key
    assert route.accepts("shop-broadcast", "audit.login")
    assert route.accepts("shop-events", "email")  # "#" is zero words too
    assert not route.accepts("shop", "refunds")


def test_a_route_is_fanout_if_it_or_any_recorded_binding_is() -> None:
    assert QueueRoute("audit", spec(), kind="fanout").fanout
    assert not QueueRoute("emails", spec(), kind="topic").fanout
    assert QueueRoute("emails", spec(), kind="topic",
                      shared=frozenset({("fanout", "")})).fanout


# --- unmatched copies and the shared records ---------------------------------------------------
def test_reading_the_records_decodes_every_binding_of_the_queue(
    admin: ScriptedAdmin, records: BindingRecords
) -> None:
    admin.record("topic", "email.#")
    admin.record("direct", "weird key/é")
    admin.records.append(f"projects/{PROJECT}/subscriptions/other~binding~direct~x")
    route = QueueRoute("emails", spec(), kind="topic", shares=True)
    route.read_shared(records)
    assert route.shared == {("topic", "email.#"), ("direct", "weird key/é")}
    assert route.read_at > 0


def test_an_unmatched_copy_published_after_the_last_read_reads_the_records_again(
    admin: ScriptedAdmin, records: BindingRecords
) -> None:
    """Another process bound the queue to ``email.#`` after this one read the records: the
    copy it published since is the queue's, found by reading again, not dropped."""
    route = QueueRoute("emails", spec(), kind="topic", routing_keys={"orders"}, shares=True)
    route.read_shared(records)
    assert admin.calls == 1
    admin.record("topic", "email.#")
    assert route.accepts_now("shop-events", "email.welcome", route.read_at + 5, records)
    assert admin.calls == 2
    assert ("topic", "email.#") in route.shared


def test_an_unmatched_copy_older_than_the_last_read_is_dropped_without_a_read(
    admin: ScriptedAdmin, records: BindingRecords
) -> None:
    route = QueueRoute("emails", spec(), kind="topic", routing_keys={"orders"}, shares=True)
    route.read_shared(records)
    admin.record("topic", "email.#")  # recorded after the read, but the copy is older still
    older = route.read_at - CLOCK_MARGIN_SECONDS - 1
    assert not route.accepts_now("shop-events", "email.welcome", older, records)
    assert admin.calls == 1


def test_within_the_clock_margin_a_copy_counts_as_newer_than_the_read(
    admin: ScriptedAdmin, records: BindingRecords
) -> None:
    route = QueueRoute("emails", spec(), kind="topic", routing_keys={"orders"}, shares=True)
    route.read_shared(records)
    just_before = route.read_at - CLOCK_MARGIN_SECONDS / 2
    assert not route.accepts_now("shop-events", "email.welcome", just_before, records)
    assert admin.calls == 2  # read again: Pub/Sub's clock may run ahead of ours


def test_a_temporary_queue_never_reads_records_for_an_unmatched_copy(
    admin: ScriptedAdmin, records: BindingRecords
) -> None:
    """A temporary queue's bindings live only in its process: nothing to read."""
    route = QueueRoute("reply", spec(), kind="direct", routing_keys={"mine"}, shares=False)
    assert not route.accepts_now("replies", "someone-else", published_at=1e12, records=records)
    assert admin.calls == 0


def test_a_matching_copy_is_kept_without_reading_the_records(
    admin: ScriptedAdmin, records: BindingRecords
) -> None:
    route = QueueRoute("emails", spec(), kind="topic", routing_keys={"email.#"}, shares=True)
    assert route.accepts_now("shop-events", "email.x", published_at=1e12, records=records)
    assert admin.calls == 0


def test_a_message_without_a_publish_time_counts_as_published_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(routing, "time", SimpleNamespace(time=lambda: 1234.5))
    assert published_at(object()) == 1234.5
    stamped = SimpleNamespace(publish_time=SimpleNamespace(seconds=100, nanos=500_000_000))
    assert published_at(stamped) == 100.5
