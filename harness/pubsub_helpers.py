"""Helpers for tests that look at Pub/Sub directly, beside the transport."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from google.pubsub_v1 import PubsubMessage, ReceivedMessage
from kombu import Connection, Consumer, Message, Queue

from vividly_tasks.transport.clients import clients_for_this_process
from vividly_tasks.transport.naming import (
    dead_letter_id,
    resource_id,
    subscription_path,
    topic_path,
)


def pull_all(path: str, *, expect: int, timeout: float = 15.0) -> list[ReceivedMessage]:
    """Pull (and ack) from a subscription until ``expect`` messages came or time ran out."""
    subscriber = clients_for_this_process().subscriber
    received: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(received) < expect and time.monotonic() < deadline:
        try:
            response = subscriber.pull(subscription=path, max_messages=100, timeout=2)
        except Exception:  # DeadlineExceeded on an empty subscription
            continue
        if response.received_messages:
            received.extend(response.received_messages)
            subscriber.acknowledge(
                subscription=path, ack_ids=[m.ack_id for m in response.received_messages]
            )
    return received


def dead_letters(project: str, prefix: str, queue: str, *, expect: int,
                 timeout: float = 15.0) -> list[ReceivedMessage]:
    subscription_id = dead_letter_id(resource_id(prefix, queue))
    return pull_all(subscription_path(project, subscription_id), expect=expect, timeout=timeout)


def publish_raw(project: str, prefix: str, topic_name: str, data: bytes,
                **attributes: Any) -> None:
    """A publish that bypasses Kombu: what another system might put on the topic."""
    publisher = clients_for_this_process().publisher
    publisher.publish(
        topic=topic_path(project, resource_id(prefix, topic_name)),
        messages=[PubsubMessage(data=data, attributes={k: str(v) for k, v in attributes.items()})],
        timeout=10,
    )


def list_subscriptions(project: str) -> list[str]:
    subscriber = clients_for_this_process().subscriber
    return [s.name for s in subscriber.list_subscriptions(project=f"projects/{project}")]


def collect(
    connection: Connection, queues: list[Queue], expect: int, *, timeout: float = 15.0,
    linger: float = 1.0, accept: list[str] | None = None, declare: bool = True,
) -> list[Message]:
    """Consume (acking) until ``expect`` messages came, then ``linger`` for any extra ones."""
    got: list[Message] = []

    def on_message(body: object, message: Message) -> None:
        got.append(message)
        message.ack()

    with Consumer(connection, queues, callbacks=[on_message], accept=accept or ["json"],
                  auto_declare=declare):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(got) >= expect:
                deadline = min(deadline, time.monotonic() + linger)
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=max(0.01, deadline - time.monotonic()))
    return got
