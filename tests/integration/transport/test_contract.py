"""Kombu's contract, kept by the transport, on the Pub/Sub emulator.

What a producer sends arrives as sent (any serializer, headers, properties), with Pub/Sub's
metadata in ``delivery_info``; the consumer's accept list decides what is deserialized.
Exchanges route as in AMQP (direct, fanout, topic, the default exchange); ``basic_get``,
purge, delete and recover do what Kombu says.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from queue import Empty
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue
from kombu.exceptions import ContentDisallowed

import vividly_tasks.transport  # noqa: F401 - registers pubsub://
from harness.pubsub_helpers import collect, dead_letters, list_subscriptions
from harness.workers import REPO_ROOT
from vividly_tasks.transport.errors import PubSubChannelError, ResourceNotFound
from vividly_tasks.worker.requests import PUBSUB_REQUEST_FIELDS

PREFIX = "c-"
HEADERS = {"k1": "v1"}


def direct_queue(name: str) -> Queue:
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def publish(connection: Connection, body: Any, queue: Queue, **options: Any) -> None:
    with Producer(connection.default_channel) as producer:
        producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                         declare=[queue], **options)


@pytest.mark.parametrize(("serializer", "content_type", "body"), [
    ("pickle", "application/x-python-serialize", {"tuple": (1, "a"), "set": {3}}),
    ("yaml", "application/x-yaml", {"lesson": "fractions", "grades": [5, 6]}),
    ("json", "application/json", {"text": "héllo", "n": 1}),
])
def test_any_serializer_the_consumer_accepts_arrives_exactly_as_published(
    connection: Connection, serializer: str, content_type: str, body: Any
) -> None:
    queue = direct_queue(f"serializer-{serializer}")
    publish(connection, body, queue, serializer=serializer, headers=HEADERS,
            correlation_id="corr-1", reply_to="replies", priority=3)
    [message] = collect(connection, [queue], 1, accept=[serializer])
    assert message.decode() == body
    assert (message.content_type, message.content_encoding) == (content_type, "utf-8"
                                                                  if serializer != "pickle"
                                                                  else "binary")
    assert message.headers == HEADERS  # nothing added by the transport
    assert (message.properties["correlation_id"], message.properties["reply_to"],
            message.properties["priority"]) == ("corr-1", "replies", 3)
    info = message.delivery_info
    assert info["delivery_attempt"] == 1 and not info["redelivered"]
    assert info["pubsub_message_id"] and info["pubsub_publish_time"].endswith("Z")
    assert info["pubsub_subscription"].endswith(f"/subscriptions/{PREFIX}{queue.name}")
    # The worker's request class reads exactly these keys (vividly_tasks.worker.requests).
    assert set(PUBSUB_REQUEST_FIELDS) <= info.keys()


def test_raw_bytes_with_an_encoding_arrive_as_bytes(connection: Connection) -> None:
    queue = direct_queue("raw-bytes")
    data = bytes(range(256))
    publish(connection, data, queue, content_type="application/octet-stream",
            content_encoding="binary", headers=HEADERS)
    [message] = collect(connection, [queue], 1, accept=["application/octet-stream"])
    assert message.body == data and message.decode() == data
    assert (message.content_type, message.content_encoding) == (
        "application/octet-stream", "binary")
    assert message.headers == HEADERS


def test_a_property_json_cannot_carry_is_left_out_as_on_amqp_and_the_message_arrives(
    connection: Connection
) -> None:
    # Celery's own integration test republishes from a before_task_publish handler with
    # ``**kwargs``, which carries the Signal object into the properties.
    queue = direct_queue("odd-property")
    publish(connection, {"n": 1}, queue, headers=HEADERS, correlation_id="corr-2",
            signal=object())
    [message] = collect(connection, [queue], 1)
    assert message.decode() == {"n": 1} and message.headers == HEADERS
    assert message.properties["correlation_id"] == "corr-2"
    assert "signal" not in message.properties


def test_the_consumer_not_the_transport_refuses_what_it_does_not_accept(
    connection: Connection
) -> None:
    queue = direct_queue("refused-pickle")
    publish(connection, {"never": "unpickled"}, queue, serializer="pickle", headers=HEADERS)
    refused: list[tuple[Message, Exception]] = []

    def on_decode_error(message: Message, exc: Exception) -> None:
        refused.append((message, exc))
        message.ack()

    with Consumer(connection, [queue], callbacks=[lambda *_: None], accept=["json"],
                  on_decode_error=on_decode_error):
        deadline = time.monotonic() + 15
        while not refused and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=1)
    [(message, exc)] = refused
    assert isinstance(exc, ContentDisallowed)
    assert message.headers == HEADERS


def test_simple_queue_and_simple_buffer(connection: Connection) -> None:
    simple = connection.SimpleQueue("simple")
    simple.put({"a": 1}, headers=HEADERS)
    message = simple.get(timeout=10)
    assert (message.payload, message.headers) == ({"a": 1}, HEADERS)
    message.ack()
    simple.close()
    # SimpleBuffer: transient messages, no acks; its put is confirmed like any other.
    buffer = connection.SimpleBuffer("buffer")
    buffer.put("first")
    buffer.put("second")
    got = sorted(buffer.get(timeout=10).payload for _ in range(2))
    assert got == ["first", "second"]
    buffer.close()


def test_basic_get_with_no_ack_takes_the_message_for_good(broker_url: str) -> None:
    queue = direct_queue("get-no-ack")
    with Connection(broker_url, transport_options={"prefix": PREFIX}) as first:
        publish(first, "once", queue)
        bound = queue(first.default_channel)
        message = poll_get(bound, no_ack=True)
        assert message.payload == "once"
    # The channel closed holding nothing: the message does not come back to anyone.
    with Connection(broker_url, transport_options={"prefix": PREFIX}) as second:
        bound = queue(second.default_channel)
        time.sleep(1)
        assert bound.get(no_ack=True) is None
        with pytest.raises(AssertionError):
            poll_get(bound, no_ack=True, timeout=4)


def poll_get(bound: Queue, *, no_ack: bool, timeout: float = 15.0) -> Message:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = bound.get(no_ack=no_ack)
        if message is not None:
            return message
    raise AssertionError(f"nothing on {bound.name} within {timeout} s")


def test_purge_counts_what_waited_and_never_creates_a_queue(
    connection: Connection, pubsub_project: str
) -> None:
    never = direct_queue("never-declared")
    with pytest.raises(ResourceNotFound, match="never-declared"):
        never(connection.default_channel).purge()
    assert not [s for s in list_subscriptions(pubsub_project) if "never-declared" in s]

    simple = connection.SimpleQueue("purged")
    for number in range(5):
        simple.put(number)
    assert simple.clear() == 5
    with pytest.raises(Empty):
        simple.get(timeout=2)
    simple.close()


def test_queue_delete_honours_its_flags_removes_what_it_made_and_stops_its_consumer(
    connection: Connection, pubsub_project: str
) -> None:
    queue = direct_queue("doomed")
    channel = connection.channel()
    bound = queue(channel)
    bound.declare()
    made = [s for s in list_subscriptions(pubsub_project) if "doomed" in s]
    # The queue's subscription, its dead-letter one, and the record of its binding.
    assert sorted(name.rsplit("/", 1)[1] for name in made) == [
        f"{PREFIX}doomed", f"{PREFIX}doomed-dead-letter", f"{PREFIX}doomed~binding~direct~doomed"]
    with Consumer(channel, [queue], callbacks=[lambda *_: None]):
        with pytest.raises(PubSubChannelError, match="if_unused"):
            bound.delete(if_unused=True)
        with pytest.raises(PubSubChannelError, match="if_empty"):
            bound.delete(if_empty=True)
        bound.delete()
        # Its consumer stopped first: no "vanished" connection error while draining on.
        with pytest.raises(TimeoutError):
            connection.drain_events(timeout=3)
    assert not [s for s in list_subscriptions(pubsub_project) if "doomed" in s]
    channel.close()


def test_basic_recover_with_requeue_redelivers_what_the_channel_holds(
    connection: Connection
) -> None:
    simple = connection.SimpleQueue("recovered")
    simple.put("back")
    simple.get(timeout=10)
    with pytest.raises(NotImplementedError):
        simple.channel.basic_recover(requeue=False)
    simple.channel.basic_recover(requeue=True)
    again = simple.get(timeout=10)
    assert again.payload == "back"
    assert again.delivery_info["delivery_attempt"] == 2
    again.ack()
    simple.close()


def test_a_queue_cannot_be_rebound_to_another_exchange_silently(broker_url: str) -> None:
    options = {"prefix": PREFIX}
    with Connection(broker_url, transport_options=options) as first:
        Queue("rebound", Exchange("first", "direct"), "k")(first.default_channel).declare()
    with Connection(broker_url, transport_options=options) as second, \
            pytest.raises(PubSubChannelError, match="cannot change topics"):  # no memory of it
        Queue("rebound", Exchange("second", "direct"), "k")(second.default_channel).declare()


DECLARE_ELSEWHERE = """
import json, sys
import vividly_tasks.transport
from kombu import Connection, Exchange, Queue
url, prefix, bindings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with Connection(url, transport_options={"prefix": prefix}) as connection:
    for queue, exchange, kind, key in bindings:
        Queue(queue, Exchange(exchange, kind), key)(connection.default_channel).declare()
"""


def declare_in_another_process(broker_url: str, bindings: list[tuple[str, str, str, str]]
                               ) -> None:
    """Bind queues in a process of their own, which exits: only Pub/Sub remembers."""
    subprocess.run(
        [sys.executable, "-c", DECLARE_ELSEWHERE, broker_url, PREFIX, json.dumps(bindings)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT, check=True,
        timeout=60,
    )


def test_exchanges_route_as_in_amqp_with_bindings_made_in_another_process(
    connection: Connection, broker_url: str
) -> None:
    """Direct (two queues, two keys), fanout (three queues), topic (``a.*``, ``a.#``, ``#``,
    a key nothing matches) and the default exchange, bound by another process and consumed
    here without declaring: each message reaches exactly the queues whose binding matches,
    and one that matches no binding reaches none."""
    bindings = [
        ("mx-d1", "mx-direct", "direct", "k1"), ("mx-d2", "mx-direct", "direct", "k2"),
        *[(f"mx-f{i}", "mx-fanout", "fanout", "") for i in (1, 2, 3)],
        ("mx-t-star", "mx-topic", "topic", "a.*"), ("mx-t-hash", "mx-topic", "topic", "a.#"),
        ("mx-t-all", "mx-topic", "topic", "#"), ("mx-t-none", "mx-topic", "topic", "z.z"),
    ]
    declare_in_another_process(broker_url, bindings)
    exchanges = {name: Exchange(name, kind) for _, name, kind, _ in bindings}
    with Producer(connection.default_channel) as producer:
        for body, exchange, key in [
            ("d-k1", "mx-direct", "k1"), ("d-k2", "mx-direct", "k2"),
            ("d-k3", "mx-direct", "k3"), ("f", "mx-fanout", ""), ("a", "mx-topic", "a"),
            ("a.b", "mx-topic", "a.b"), ("a.b.c", "mx-topic", "a.b.c"), ("b", "mx-topic", "b"),
        ]:
            producer.publish(body, exchange=exchanges[exchange], routing_key=key)
        producer.publish("default", exchange="", routing_key="mx-d1")
    expected = {
        "mx-d1": ["d-k1", "default"], "mx-d2": ["d-k2"], "mx-f1": ["f"], "mx-f2": ["f"],
        "mx-f3": ["f"], "mx-t-star": ["a.b"], "mx-t-hash": ["a", "a.b", "a.b.c"],
        "mx-t-all": ["a", "a.b", "a.b.c", "b"], "mx-t-none": [],
    }
    got = {
        queue: sorted(m.decode() for m in collect(
            connection, [Queue(queue, exchanges[exchange], key)], len(expected[queue]),
            timeout=10, linger=1.5, accept=["text/plain"], declare=False,
        ))
        for queue, exchange, _, key in bindings
    }
    assert got == expected


def test_one_queue_bound_with_two_keys_by_two_processes_receives_both(
    connection: Connection, broker_url: str
) -> None:
    exchange = Exchange("two-keys", "direct")
    declare_in_another_process(broker_url, [("two-keys-q", "two-keys", "direct", "from-there")])
    here = Queue("two-keys-q", exchange, "from-here")
    here(connection.default_channel).declare()  # this process knows only its own key
    with Producer(connection.default_channel) as producer:
        for key in ("from-there", "from-here", "from-nobody"):
            producer.publish(key, exchange=exchange, routing_key=key)
    got = collect(connection, [here], 2, linger=2.0, accept=["text/plain"])
    assert sorted(m.decode() for m in got) == ["from-here", "from-there"]


# --- releases at shutdown: a held message is not dead-lettered by releases alone ------------
RELEASE_CYCLES = 20
#: Short Pulls: a closing channel waits for its Pull in flight, 20 times over here.
QUICK_CLOSE = {"prefix": PREFIX, "pull_timeout_seconds": 1.0}


def hold_and_release(broker_url: str, name: str, *, started: bool) -> int:
    """One job's life: connect, receive the message, exit without acking (closing releases
    it). ``started``: the worker had begun the task (the worker behaviours say so)."""
    with Connection(broker_url, transport_options=QUICK_CLOSE) as connection:
        simple = connection.SimpleQueue(name)
        message = simple.get(timeout=15)
        if started:
            message.channel.note_started(message.delivery_tag)
        attempt: int = message.delivery_info["delivery_attempt"]
        simple.close()
    return attempt


def test_a_message_released_unstarted_survives_twenty_exits_and_then_runs(
    broker_url: str, pubsub_project: str
) -> None:
    """Before the renewal rule the fifth release dead-lettered it (4 exits survived, at
    Pub/Sub's default 5 delivery attempts): a countdown held by a fleet of short jobs died
    before it was due."""
    with Connection(broker_url, transport_options={"prefix": PREFIX}) as connection:
        connection.SimpleQueue("held").put("held")
    attempts = [hold_and_release(broker_url, "held", started=False)
                for _ in range(RELEASE_CYCLES)]
    assert max(attempts) <= 4  # renewed before Pub/Sub's fifth attempt, every time
    with Connection(broker_url, transport_options={"prefix": PREFIX}) as connection:
        simple = connection.SimpleQueue("held")
        final = simple.get(timeout=15)
        assert final.payload == "held"
        final.ack()
        with pytest.raises(Empty):  # one message, never two
            simple.get(timeout=3)
        simple.close()
    assert dead_letters(pubsub_project, PREFIX, "held", expect=1, timeout=3) == []


def test_a_message_released_after_it_started_still_reaches_the_dead_letter_topic(
    broker_url: str, pubsub_project: str
) -> None:
    """A task that began and never finished (its worker stopped or crashed every time) is
    what the dead-letter policy is for: 5 deliveries, then the dead-letter topic."""
    with Connection(broker_url, transport_options={"prefix": PREFIX}) as connection:
        connection.SimpleQueue("poison").put("poison")
    attempts = [hold_and_release(broker_url, "poison", started=True) for _ in range(5)]
    assert attempts == [1, 2, 3, 4, 5]
    # Pub/Sub forwards it when it would deliver it a sixth time, after the retry policy's
    # backoff: keep a consumer pulling until then; it never gets the message.
    found: list[Any] = []
    deadline = time.monotonic() + 60
    with Connection(broker_url, transport_options=QUICK_CLOSE) as connection:
        simple = connection.SimpleQueue("poison")
        while not found:
            assert time.monotonic() < deadline, "never dead-lettered"
            with pytest.raises(Empty):  # no sixth delivery
                simple.get(timeout=2)
            found = dead_letters(pubsub_project, PREFIX, "poison", expect=1, timeout=1)
        simple.close()
    [dead] = found
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
