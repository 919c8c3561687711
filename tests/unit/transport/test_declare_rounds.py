"""A queue's declare and ``vividly provision``'s plan send their independent Pub/Sub calls side
by side: each call here takes a round trip of ``TRIP`` seconds, and what is counted is how many
rounds a caller waits for, not only what ends up existing."""

from __future__ import annotations

import concurrent.futures.thread
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.api_core import exceptions as google_errors
from google.pubsub_v1 import Subscription, Topic

from vividly_tasks.transport.bindings import BindingRecords, record_path, records_topic
from vividly_tasks.transport.provisioning import Provisioner, SubscriptionSpec, concurrently
from vividly_tasks.transport.provisioning_plan import make_plan, queue_resources

TRIP = 0.1
PROJECT = "rounds"


@dataclass
class FakePubSub:
    """Topics and subscriptions of one project; each call is answered after ``TRIP``, the
    change made halfway (when the request reaches the server)."""

    topics: set[str] = field(default_factory=set)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    calls: list[tuple[str, str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def trip(self, method: str, name: str, change: Any) -> Any:
        started = time.monotonic()
        time.sleep(TRIP / 2)
        error: Exception | None = None
        with self.lock:
            try:
                result = change()
            except Exception as exc:  # answered like any other, a round trip later
                error = exc
        time.sleep(TRIP / 2)
        with self.lock:
            self.calls.append((method, name, started, time.monotonic()))
        if error is not None:
            raise error
        return result

    def rounds(self) -> int:
        """The longest chain of calls that ran one after another."""
        chain, free_at = 0, float("-inf")
        for _, _, start, end in sorted(self.calls, key=lambda call: call[3]):
            if start >= free_at:
                chain, free_at = chain + 1, end
        return chain


class FakePublisher:
    def __init__(self, server: FakePubSub) -> None:
        self.server = server

    def create_topic(self, request: Topic, timeout: float) -> Topic:
        def change() -> Topic:
            if request.name in self.server.topics:
                raise google_errors.AlreadyExists(request.name)
            self.server.topics.add(request.name)
            return request
        return self.answered("CreateTopic", request.name, change)

    def get_topic(self, topic: str, timeout: float) -> Topic:
        def change() -> Topic:
            if topic not in self.server.topics:
                raise google_errors.NotFound(topic)
            return Topic(name=topic)
        return self.answered("GetTopic", topic, change)

    def list_topic_subscriptions(self, request: dict[str, str], timeout: float) -> list[str]:
        def change() -> list[str]:
            if request["topic"] not in self.server.topics:
                raise google_errors.NotFound(request["topic"])
            return [path for path, sub in self.server.subscriptions.items()
                    if sub.topic == request["topic"]]
        return self.answered("ListTopicSubscriptions", request["topic"], change)

    def answered(self, method: str, name: str, change: Any) -> Any:
        return self.server.trip(method, name, change)


class FakeSubscriber(FakePublisher):
    def create_subscription(self, request: Subscription, timeout: float) -> Subscription:
        def change() -> Subscription:
            if request.name in self.server.subscriptions:
                raise google_errors.AlreadyExists(request.name)
            topics = [request.topic, request.dead_letter_policy.dead_letter_topic]
            if any(topic and topic not in self.server.topics for topic in topics):
                raise google_errors.NotFound(f"topic of {request.name}")
            self.server.subscriptions[request.name] = request
            return request
        return self.answered("CreateSubscription", request.name, change)

    def get_subscription(self, subscription: str, timeout: float) -> Subscription:
        def change() -> Subscription:
            if subscription not in self.server.subscriptions:
                raise google_errors.NotFound(subscription)
            return self.server.subscriptions[subscription]
        return self.answered("GetSubscription", subscription, change)


@dataclass
class FakeClients:
    server: FakePubSub

    @property
    def publisher(self) -> FakePublisher:
        return FakePublisher(self.server)

    @property
    def subscriber(self) -> FakeSubscriber:
        return FakeSubscriber(self.server)


SPEC = SubscriptionSpec(PROJECT, "vividly-lessons", "vividly-lessons", ack_deadline_seconds=60,
                        max_delivery_attempts=5, retry_min_backoff_seconds=1,
                        retry_max_backoff_seconds=60)


def declare(server: FakePubSub) -> int:
    """A new connection's declare of the queue; the rounds it waited for."""
    server.calls.clear()
    Provisioner(FakeClients(server), auto_create=True).ensure_subscription(  # type: ignore[arg-type]
        SPEC)
    return server.rounds()


def test_a_queue_that_exists_is_declared_in_one_round_trip() -> None:
    server = FakePubSub()
    assert declare(server) <= 2  # created: topics first, then what reads them
    assert SPEC.path in server.subscriptions
    assert server.subscriptions[SPEC.path].dead_letter_policy.dead_letter_topic == \
        SPEC.dead_letter_topic
    assert SPEC.dead_letter_subscription in server.subscriptions
    assert declare(server) == 1  # every later declare: its four calls side by side
    assert len(server.calls) == 4


def test_a_declare_still_recreates_a_deleted_dead_letter_subscription() -> None:
    server = FakePubSub()
    declare(server)
    assert SPEC.dead_letter_subscription
    del server.subscriptions[SPEC.dead_letter_subscription]
    assert declare(server) == 1
    assert SPEC.dead_letter_subscription in server.subscriptions


def test_a_declare_recreates_a_deleted_queue_and_its_deleted_dead_letter_topic() -> None:
    server = FakePubSub()
    declare(server)
    assert SPEC.dead_letter_topic and SPEC.dead_letter_subscription
    server.topics.discard(SPEC.dead_letter_topic)
    del server.subscriptions[SPEC.path], server.subscriptions[SPEC.dead_letter_subscription]
    assert declare(server) == 2
    assert {SPEC.path, SPEC.dead_letter_subscription} <= set(server.subscriptions)
    assert SPEC.dead_letter_topic in server.topics


def test_a_recorded_binding_is_confirmed_in_one_round_trip() -> None:
    server = FakePubSub()
    binding = ("direct", "lessons")
    records = BindingRecords(FakeClients(server), PROJECT)  # type: ignore[arg-type]
    records.write("vividly-lessons", binding, create=True)  # its topic, then the record
    assert records_topic(PROJECT, "vividly-lessons") in server.topics
    assert record_path(PROJECT, "vividly-lessons", binding) in server.subscriptions
    server.calls.clear()
    again = BindingRecords(FakeClients(server), PROJECT)  # type: ignore[arg-type]
    again.write("vividly-lessons", binding, create=True)
    assert [call[0] for call in server.calls] == ["CreateSubscription"]  # AlreadyExists
    assert again.read("vividly-lessons") == frozenset({binding})


def test_a_plan_reads_every_resource_at_once_and_names_each_missing_one() -> None:
    server = FakePubSub()
    declare(server)
    resources = queue_resources("lessons", SPEC, [("direct", "lessons")])
    server.calls.clear()
    plan = make_plan(FakeClients(server), resources)  # type: ignore[arg-type]
    assert len(server.calls) == len(resources) == 6
    assert server.rounds() == 1
    assert [step.resource for step in plan.steps] == resources  # in the resources' order
    assert [step.resource.path for step in plan.missing] == [
        records_topic(PROJECT, "vividly-lessons"),
        record_path(PROJECT, "vividly-lessons", ("direct", "lessons")),
    ]
    assert [step.action for step in plan.steps[:4]] == ["ok"] * 4


def test_calls_side_by_side_keep_their_order_and_raise_the_first_failure() -> None:
    def failing(text: str) -> str:
        raise ValueError(text)

    assert concurrently([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    with pytest.raises(ValueError, match="first"):
        concurrently([lambda: 1, lambda: failing("first"), lambda: failing("second")])


def test_at_interpreter_exit_the_calls_run_one_after_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(concurrent.futures.thread, "_shutdown", True)  # no new threads
    assert concurrently([lambda: "a", lambda: "b"]) == ["a", "b"]
