"""Pipelined publishing: ``publish_in_flight`` over the emulator, with real producer
processes that exit at once or are killed, a topic deleted under a publisher, and the bound on
unconfirmed messages read from the transport's own counter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Exchange, Queue

from harness.apps.pipelined_producer import TASK
from harness.pubsub_helpers import pull_all
from harness.waiting import wait_for
from harness.workers import REPO_ROOT
from vividly_tasks.transport.clients import clients_for_this_process
from vividly_tasks.transport.confirms import PublishFailed
from vividly_tasks.transport.naming import resource_id, subscription_path, topic_path

QUEUE = "celery"


@pytest.fixture
def prefix() -> str:
    return f"pipe-{uuid.uuid4().hex[:6]}-"


def make_app(project: str, prefix: str, **options: object) -> Celery:
    app = Celery("pipelined", broker=f"pubsub://{project}", set_as_current=False)
    app.conf.broker_transport_options = {"prefix": prefix, **options}
    return app


@pytest.fixture
def declared(pubsub_project: str, prefix: str) -> Iterator[str]:
    """The task queue's topic and subscription exist; yields the subscription's path."""
    app = make_app(pubsub_project, prefix)
    with app.connection_for_write() as connection:
        Queue(QUEUE, Exchange(QUEUE), QUEUE)(connection.default_channel).declare()
    app.close()
    yield subscription_path(pubsub_project, resource_id(prefix, QUEUE))


def task_ids(received: list[object]) -> list[str]:
    return [m.message.attributes["task_id"] for m in received]  # type: ignore[attr-defined]


def producer(project: str, prefix: str, tag: str, count: int, in_flight: int,
             confirmed: Path, forks: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.apps.pipelined_producer", project, prefix, tag, str(count),
         str(in_flight), str(confirmed), *([str(forks)] if forks else [])],
        cwd=REPO_ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_fifty_producers_that_exit_at_once_lose_nothing(
    pubsub_project: str, prefix: str, declared: str, tmp_path: Path,
) -> None:
    confirmed = tmp_path / "confirmed.txt"
    expected = {f"p{n}-{i}" for n in range(50) for i in range(20)}
    # Fifty processes, forked after the imports (fifty interpreters starting would take a
    # minute on two cores), each leaving through a normal interpreter exit.
    process = producer(pubsub_project, prefix, "p", 20, 8, confirmed, forks=50)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    received = pull_all(declared, expect=1000, timeout=60)
    assert sorted(task_ids(received)) == sorted(expected)
    assert len(confirmed.read_text().splitlines()) == 1000


def test_a_killed_producer_loses_only_what_was_not_confirmed(
    pubsub_project: str, prefix: str, declared: str, tmp_path: Path,
) -> None:
    confirmed = tmp_path / "confirmed.txt"
    confirmed.touch()
    process = producer(pubsub_project, prefix, "k", 20_000, 200, confirmed)
    try:
        wait_for(lambda: len(confirmed.read_text().splitlines()) >= 500, 60,
                 "500 confirmations")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    reported = {line.split("[", 1)[1].rstrip("]")
                for line in confirmed.read_text().splitlines()}
    assert len(reported) < 20_000, "the producer finished before it was killed"
    time.sleep(1)  # requests the producer had in flight may still land
    received = set(task_ids(pull_all(declared, expect=len(reported), timeout=60)))
    received |= set(task_ids(pull_all(declared, expect=20_000, timeout=3)))
    assert reported <= received  # every confirmation was true
    assert all(line.startswith(f"{TASK}[k-") for line in confirmed.read_text().splitlines())


def test_in_flight_never_exceeds_the_bound_and_flush_confirms_all(
    pubsub_project: str, prefix: str, declared: str,
) -> None:
    app = make_app(pubsub_project, prefix, publish_in_flight=8)
    with app.producer_or_acquire() as producer_:
        for number in range(1500):
            app.send_task(TASK, args=[number], producer=producer_)
        producer_.channel.flush_publishes()
        pipeline = producer_.channel.publish_pipeline
    assert pipeline is not None
    assert pipeline.peak_in_flight == 8  # reached, never passed
    assert pipeline.in_flight == 0 and pipeline.confirmed >= 1500
    assert len(pull_all(declared, expect=1500, timeout=60)) == 1500
    app.close()


def test_a_publish_failing_at_the_server_raises_naming_the_task(
    pubsub_project: str, prefix: str, declared: str,
) -> None:
    app = make_app(pubsub_project, prefix, publish_in_flight=10, auto_create=False)
    with app.connection_for_write() as connection:
        # A bare Kombu producer: nothing is declared on the way (a declaration would find the
        # topic gone at once); the publish itself must fail at the server, in the background.
        producer_ = connection.Producer(auto_declare=False)

        def send(task_id: str) -> None:
            producer_.publish({"args": []}, routing_key=QUEUE, serializer="json",
                              headers={"task": TASK, "id": task_id})

        send("before")
        producer_.channel.flush_publishes()
        clients_for_this_process().publisher.delete_topic(
            topic=topic_path(pubsub_project, resource_id(prefix, QUEUE)))
        send("lost-one")
        with pytest.raises(PublishFailed, match=r"pipelined.noop\[lost-one\]") as raised:
            producer_.channel.flush_publishes(timeout=30)
    assert raised.value.labels == [f"{TASK}[lost-one]"]
    assert "does not exist" in str(raised.value)
    app.close()
