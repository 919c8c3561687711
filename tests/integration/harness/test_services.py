"""Each service fixture proven by real use: the harness is only as good as what it starts."""

from __future__ import annotations

import psycopg
import redis
from google.cloud import pubsub_v1

from harness.services import ServiceProcess


def test_pubsub_emulator_publishes_and_pulls(pubsub_project: str) -> None:
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(pubsub_project, "harness")
    subscription = subscriber.subscription_path(pubsub_project, "harness")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    publisher.publish(topic, b"hello", origin="harness").result(timeout=10)
    response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)

    [received] = response.received_messages
    assert received.message.data == b"hello"
    assert received.message.attributes["origin"] == "harness"
    subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
    subscriber.close()
    publisher.transport.close()


def test_postgres_writes_and_reads_a_row(postgres_url: str) -> None:
    url = postgres_url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE lessons (id serial PRIMARY KEY, topic text NOT NULL)")
        conn.execute("INSERT INTO lessons (topic) VALUES (%s)", ("photosynthesis",))
        row = conn.execute("SELECT topic FROM lessons").fetchone()
    assert row == ("photosynthesis",)


def test_redis_databases_are_private_per_test(redis_url: str, redis_server: ServiceProcess) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("k", "v")
        assert client.get("k") == b"v"
    assert redis_url.startswith(f"redis://127.0.0.1:{redis_server.port}/")


def test_emulator_restart_keeps_its_port(pubsub_emulator: ServiceProcess) -> None:
    port = pubsub_emulator.port
    pubsub_emulator.restart()
    assert pubsub_emulator.port == port
    assert pubsub_emulator.process is not None and pubsub_emulator.process.poll() is None
