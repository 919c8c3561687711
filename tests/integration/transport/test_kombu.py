"""The transport at Kombu level, against the Pub/Sub emulator: publish and consume, routing,
requeue and reject, dead letters, verify-only provisioning, size limits, connection errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from queue import Empty

import pytest
from kombu import Connection, Exchange, Producer, Queue

from harness.pubsub_helpers import collect, dead_letters, list_subscriptions, publish_raw
from harness.workers import REPO_ROOT
from vividly_tasks.transport import register
from vividly_tasks.transport.clients import clients_for_this_process
from vividly_tasks.transport.errors import MessageTooLarge, PubSubConnectionError, ResourceNotFound
from vividly_tasks.transport.naming import topic_path

PREFIX = "t-"


def test_publish_then_consume(connection: Connection) -> None:
    queue = connection.SimpleQueue("simple")
    queue.put({"lesson": "fractions"})
    message = queue.get(timeout=10)
    assert message.payload == {"lesson": "fractions"}
    assert message.delivery_info["delivery_attempt"] == 1
    assert message.headers == {}  # exactly what the producer sent
    message.ack()
    queue.close()


def test_get_nowait_right_after_put_finds_the_message(connection: Connection) -> None:
    queue = connection.SimpleQueue("nowait")
    queue.put("hello")
    message = queue.get_nowait()
    assert message.payload == "hello"
    message.ack()
    queue.close()


def test_consuming_an_empty_queue_times_out_promptly(connection: Connection) -> None:
    queue = connection.SimpleQueue("empty")
    started = time.monotonic()
    with pytest.raises(Empty):
        queue.get(timeout=1)
    assert time.monotonic() - started < 2.5
    queue.close()


def test_two_queues_never_get_each_others_messages(connection: Connection) -> None:
    exchange = Exchange("lessons", type="direct")
    text = Queue("text-lessons", exchange, routing_key="text")
    video = Queue("video-lessons", exchange, routing_key="video")
    with connection.channel() as channel:
        for queue in (text, video):
            queue(channel).declare()
        producer = Producer(channel, exchange)
        for i in range(3):
            producer.publish({"kind": "text", "i": i}, routing_key="text")
        producer.publish({"kind": "video"}, routing_key="video")
        producer.publish({"kind": "nobody"}, routing_key="unbound")  # dropped, as in AMQP

    text_bodies = [json.loads(m.body) for m in collect(connection, [text], 3)]
    video_bodies = [json.loads(m.body) for m in collect(connection, [video], 1)]
    assert sorted(b["i"] for b in text_bodies) == [0, 1, 2]
    assert {b["kind"] for b in text_bodies} == {"text"}
    assert [b["kind"] for b in video_bodies] == ["video"]


def test_fanout_reaches_every_bound_queue_published_from_another_process(
    connection: Connection, broker_url: str
) -> None:
    exchange = Exchange("announcements", type="fanout")
    queues = [Queue(f"listener-{i}", exchange) for i in range(3)]
    with connection.channel() as channel:
        for queue in queues:
            queue(channel).declare()
    # The publisher is a separate process that never declared these queues.
    script = (
        "from kombu import Connection, Exchange\n"
        "from vividly_tasks.transport import register\n"
        "register()\n"
        f"with Connection({broker_url!r}, transport_options={{'prefix': {PREFIX!r}}}) as c:\n"
        "    p = c.Producer()\n"
        "    p.publish({'hello': 'all'}, exchange=Exchange('announcements', type='fanout'),"
        " declare=[Exchange('announcements', type='fanout')])\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=60)
    for queue in queues:
        [message] = collect(connection, [queue], 1)
        assert json.loads(message.body) == {"hello": "all"}


def test_a_fanout_binding_key_is_a_pattern_as_with_redis(connection: Connection) -> None:
    """``#`` (Celery's event receivers, Flower) takes everything, ``worker.#`` only worker
    events: the routing keys Celery gives its events."""
    exchange = Exchange("events", type="fanout")
    everything = Queue("all-events", exchange, routing_key="#")
    workers_only = Queue("worker-events", exchange, routing_key="worker.#")
    with connection.channel() as channel:
        for queue in (everything, workers_only):
            queue(channel).declare()
        producer = Producer(channel)
        for key in ("task.received", "worker.heartbeat", "task.succeeded"):
            producer.publish({"key": key}, exchange=exchange, routing_key=key)
    received = collect(connection, [everything], 3)
    assert sorted(json.loads(m.body)["key"] for m in received) == [
        "task.received", "task.succeeded", "worker.heartbeat"
    ]
    [heartbeat] = collect(connection, [workers_only], 1, linger=2.0)
    assert json.loads(heartbeat.body) == {"key": "worker.heartbeat"}


def test_requeue_delivers_the_same_message_again_exactly_once(connection: Connection) -> None:
    queue = connection.SimpleQueue("requeue")
    queue.put("again")
    first = queue.get(timeout=10)
    first.requeue()
    second = queue.get(timeout=10)
    assert second.payload == "again"
    assert second.delivery_info["pubsub_message_id"] == first.delivery_info["pubsub_message_id"]
    second.ack()
    # No copy was made: nothing else arrives (well past the 10 s minimum ack deadline).
    with pytest.raises(Empty):
        queue.get(timeout=12)
    queue.close()


def test_reject_with_requeue_delivers_again(connection: Connection) -> None:
    queue = connection.SimpleQueue("reject-requeue")
    queue.put("twice")
    queue.get(timeout=10).reject(requeue=True)
    again = queue.get(timeout=10)
    assert again.payload == "twice"
    again.ack()
    queue.close()


def test_reject_without_requeue_dead_letters_with_a_reason(
    connection: Connection, pubsub_project: str
) -> None:
    queue = connection.SimpleQueue("reject")
    queue.put({"bad": True})
    message = queue.get(timeout=10)
    message.channel.set_dead_letter_reason(message.delivery_tag, "lesson topic is empty")
    message.reject()
    [dead] = dead_letters(pubsub_project, PREFIX, "reject", expect=1)
    assert dead.message.attributes["dead_letter_reason"] == "lesson topic is empty"
    assert dead.message.attributes["dead_letter_queue"] == "reject"
    assert json.loads(json.loads(dead.message.data)["body"]) == {"bad": True}
    with pytest.raises(Empty):
        queue.get(timeout=1)
    queue.close()


def test_pubsub_dead_letters_after_max_delivery_attempts(
    connection: Connection, pubsub_project: str
) -> None:
    queue = connection.SimpleQueue("always-requeued")
    queue.put("hot potato")
    attempts = []
    for _ in range(5):
        message = queue.get(timeout=10)
        attempts.append(message.delivery_info["delivery_attempt"])
        message.requeue()
    assert attempts == [1, 2, 3, 4, 5]
    with pytest.raises(Empty):
        queue.get(timeout=2)
    [dead] = dead_letters(pubsub_project, PREFIX, "always-requeued", expect=1)
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    queue.close()


def test_poison_messages_are_dead_lettered_and_consuming_goes_on(
    broker_url: str, pubsub_project: str
) -> None:
    # The content-type fence is opt-in (the product sets it): JSON and text here.
    options = {"prefix": PREFIX, "accept_content": "application/json,text/plain"}
    with Connection(broker_url, transport_options=options) as connection:
        poison_then_good_message(connection, pubsub_project)


def poison_then_good_message(connection: Connection, pubsub_project: str) -> None:
    queue = connection.SimpleQueue("poison")  # declares queue, exchange and topic
    publish_raw(pubsub_project, PREFIX, "poison", b"\x00\xffnot json", exchange="poison",
                routing_key="poison")
    publish_raw(pubsub_project, PREFIX, "poison", b'{"request_id": "42"}')
    pickle_envelope = {"body": "gASVBQAAAAAAAACMAWGULg==", "content-type":
                       "application/x-python-serialize", "content-encoding": "binary",
                       "headers": {}, "properties": {"body_encoding": "base64"}}
    publish_raw(pubsub_project, PREFIX, "poison", json.dumps(pickle_envelope).encode())
    queue.put("after the poison")

    assert queue.get(timeout=10).payload == "after the poison"
    reasons = sorted(
        m.message.attributes["dead_letter_reason"]
        for m in dead_letters(pubsub_project, PREFIX, "poison", expect=3)
    )
    assert len(reasons) == 3
    assert any("not UTF-8" in r or "not JSON" in r for r in reasons)
    assert any("not a Kombu envelope" in r for r in reasons)
    assert any("application/x-python-serialize" in r and "refused" in r for r in reasons)
    queue.close()


def test_verify_only_mode_names_the_missing_resource(
    broker_url: str, pubsub_project: str
) -> None:
    options = {"prefix": PREFIX, "auto_create": "false"}
    for name in ("present-exchange", "present-fanout"):
        clients_for_this_process().publisher.create_topic(
            name=topic_path(pubsub_project, f"{PREFIX}{name}")
        )
    with Connection(broker_url, transport_options=options) as conn, conn.channel() as channel:
        producer = Producer(channel)
        with pytest.raises(ResourceNotFound, match=f"topics/{PREFIX}missing-exchange"):
            producer.publish("x", exchange="missing-exchange", routing_key="x")
        with pytest.raises(ResourceNotFound, match=f"topics/{PREFIX}missing-queue"):
            Queue("missing-queue", Exchange("missing-queue"))(channel).declare()
        with pytest.raises(ResourceNotFound, match=f"subscriptions/{PREFIX}missing-queue"):
            Queue("missing-queue", Exchange("present-exchange"))(channel).declare()
        # A process's own temporary queue (remote control, replies) cannot be provisioned in
        # advance: it is created, on a topic that must exist.
        fanout = Exchange("present-fanout", type="fanout")
        Queue("worker-1.pidbox", fanout, auto_delete=True)(channel).declare()
        assert any(name.endswith(f"/{PREFIX}worker-1.pidbox")
                   for name in list_subscriptions(pubsub_project))
        with pytest.raises(ResourceNotFound, match=f"topics/{PREFIX}missing-exchange"):
            Queue("worker-2.pidbox", Exchange("missing-exchange", type="fanout"),
                  auto_delete=True)(channel).declare()


def test_messages_over_the_size_limit_are_refused_with_a_clear_error(
    connection: Connection,
) -> None:
    with connection.channel() as channel:
        producer = Producer(channel)
        with pytest.raises(MessageTooLarge, match=r"tests\.big is .* bytes; Pub/Sub's limit"):
            producer.publish(
                "x" * 11_000_000, routing_key="big", headers={"task": "tests.big"},
                declare=[Queue("big")],
            )


def test_an_unreachable_broker_is_a_connection_error_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    register()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # discard port: nothing listens
    started = time.monotonic()
    with Connection("pubsub://nowhere", connect_timeout=3) as conn, pytest.raises(
        conn.connection_errors
    ):
        conn.connect()
    assert time.monotonic() - started < 6
    assert issubclass(PubSubConnectionError, ConnectionError)
