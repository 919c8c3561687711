"""On the emulator: a queue's declare sends its calls side by side, and still repairs what was
deleted since; ``vividly provision --verify`` reads every resource at once, and still names
each missing one."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from google.pubsub_v1 import PublisherClient, SubscriberClient
from kombu import Connection, Exchange, Queue

from vividly_tasks.cli import cli
from vividly_tasks.cli.exit_codes import RET_NO_PERMISSION
from vividly_tasks.transport.clients import clients_for_this_process

PREFIX = "vividly-"  # the settings' default prefix


def test_a_new_connections_declare_recreates_a_deleted_queue_and_its_dead_letters(
    pubsub_project: str,
) -> None:
    url = f"pubsub://{pubsub_project}"
    queue = Queue("lessons", Exchange("lessons", type="direct"), routing_key="lessons")
    subscriptions = [f"projects/{pubsub_project}/subscriptions/{PREFIX}{name}"
                     for name in ("lessons", "lessons-dead-letter")]
    with Connection(url) as connection:
        queue(connection.default_channel).declare()
    clients = clients_for_this_process()
    subscriber: SubscriberClient = clients.subscriber
    publisher: PublisherClient = clients.publisher
    for path in subscriptions:
        subscriber.delete_subscription(subscription=path)
    publisher.delete_topic(topic=f"projects/{pubsub_project}/topics/{PREFIX}lessons-dead-letter")

    with Connection(url) as connection:  # a worker started after the deletes
        channel = connection.default_channel
        queue(channel).declare()
        for path in subscriptions:
            assert subscriber.get_subscription(subscription=path).name == path
        dead_letters = subscriber.get_subscription(subscription=subscriptions[0])
        assert dead_letters.dead_letter_policy.dead_letter_topic.endswith(
            f"/topics/{PREFIX}lessons-dead-letter")
        with connection.Producer() as producer:
            producer.publish({"n": 1}, exchange=queue.exchange, routing_key="lessons")
        with connection.SimpleQueue(queue) as simple:
            message = simple.get(timeout=15)
            assert message.payload == {"n": 1}
            message.ack()


def test_provision_verify_names_each_missing_resource(
    pubsub_project: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    runner = CliRunner()
    created = runner.invoke(cli, ["provision"])
    assert created.exit_code == 0, created.output
    assert "created 9, updated 0, 0 already as wanted" in created.output
    missing = [f"projects/{pubsub_project}/subscriptions/{PREFIX}vividly-dead-letter",
               f"projects/{pubsub_project}/topics/{PREFIX}celery.pidbox"]
    clients = clients_for_this_process()
    clients.subscriber.delete_subscription(subscription=missing[0])
    clients.publisher.delete_topic(topic=missing[1])

    verified = runner.invoke(cli, ["provision", "--verify"])
    assert verified.exit_code == RET_NO_PERMISSION, verified.output
    lines = verified.stdout.splitlines()
    assert [line.split()[2] for line in lines if line.strip().startswith("missing")] == missing
    assert len([line for line in lines if re.match(r"^  ok ", line)]) == 7
    assert f"missing: {', '.join(missing)}" in verified.stderr
