"""Generated hostile messages through the emulator to a real worker: each is dead-lettered with
a reason, the worker stays up and runs the next normal task (property tests). Both
kinds of queue: a task queue (Kombu envelopes only) and a queue bound to a task (plain JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from harness.hostile import UNSAFE_CONTENT_TYPES, json_values
from harness.pubsub_helpers import dead_letters, publish_raw
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app

PREFIX = "vividly-"
QUEUE = "vividly"
PLAIN_QUEUE = "plain"


def envelope(body: Any, headers: Any, content_type: Any = "application/json",
             queue: str = QUEUE) -> bytes:
    """A Kombu envelope routed to ``queue`` (see docs/wire-format.md)."""
    return json.dumps({
        "body": body, "content-type": content_type, "content-encoding": "utf-8",
        "headers": headers,
        "properties": {"body_encoding": None,
                       "delivery_info": {"exchange": "", "routing_key": queue}},
    }).encode()


valid_body = json.dumps([[1, 2], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                      "chord": None}])
task_ids = st.uuids().map(str)
# One message of each family of hostile input; every one must end on the dead-letter topic.
hostile_messages = st.tuples(
    # Not UTF-8 at all.
    st.binary(max_size=60).map(lambda data: b"\xff" + data),
    # JSON, but not a Kombu envelope (what the old API published).
    json_values.map(lambda value: json.dumps({"request_id": value}).encode()),
    # An envelope claiming an unsafe serializer.
    st.tuples(st.sampled_from(UNSAFE_CONTENT_TYPES), st.text(max_size=30)).map(
        lambda pair: envelope(pair[1], {"task": "tests.add", "id": "x"}, pair[0])),
    # A task name that is not text (Celery's consumer would raise and stop the worker).
    st.tuples(json_values.filter(lambda v: not isinstance(v, str)), task_ids).map(
        lambda pair: envelope(valid_body, {"task": pair[0], "id": pair[1]})),
    # A known task without its id.
    st.just(envelope(valid_body, {"task": "tests.add"})),
    # A known task whose body is not [args, kwargs, embed].
    st.tuples(json_values.filter(lambda v: not (isinstance(v, list) and len(v) == 3)),
              task_ids).map(
        lambda pair: envelope(json.dumps(pair[0]), {"task": "tests.add", "id": pair[1]})),
    # A well-formed message of a task nobody registered (Celery rejects it).
    task_ids.map(lambda task_id: envelope(valid_body, {"task": "no.such.task", "id": task_id})),
)


# The same on a queue bound to tests.record (PUBSUB_PLAIN_MESSAGE_TASKS): plain messages
# become calls of that task; a Kombu envelope (its attribute set) is still read as one.
hostile_plain_messages = st.tuples(
    st.binary(max_size=60).map(lambda data: (b"\xff" + data, {})),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda value: (json.dumps(value).encode(), {})),
    st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in ("token",
                                                                                 "sleep_seconds")),
                    json_values, min_size=1, max_size=3).map(
        lambda kwargs: (json.dumps(kwargs).encode(), {})),
    st.tuples(json_values.filter(lambda v: not isinstance(v, str)), task_ids).map(
        lambda pair: (envelope(valid_body, {"task": pair[0], "id": pair[1]}, queue=PLAIN_QUEUE),
                      {"kombu-envelope": "1"})),
)


@pytest.fixture
def pubsub_app(pubsub_project: str, redis_url: str,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS", json.dumps({PLAIN_QUEUE: "tests.record"}))
    app = create_app()
    yield app
    app.close()


@settings(max_examples=1, phases=[Phase.generate], database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(messages=hostile_messages, plain=hostile_plain_messages,
       token=st.text(min_size=1, max_size=20))
def test_generated_hostile_messages_are_dead_lettered_and_the_worker_goes_on(
    messages: tuple[bytes, ...], plain: tuple[tuple[bytes, dict[str, str]], ...], token: str,
    pubsub_app: Celery, pubsub_project: str, ledger: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(concurrency=1, extra_args=["-Q", f"{QUEUE},{PLAIN_QUEUE}"])
    worker.wait_ready()
    for data in messages:
        note(repr(data))
        publish_raw(pubsub_project, PREFIX, QUEUE, data)
    for data, attributes in plain:
        note(f"plain: {data!r} {attributes}")
        publish_raw(pubsub_project, PREFIX, PLAIN_QUEUE, data, **attributes)
    publish_raw(pubsub_project, PREFIX, PLAIN_QUEUE, json.dumps({"token": token}).encode())
    for queue, sent in ((QUEUE, list(messages)), (PLAIN_QUEUE, [data for data, _ in plain])):
        dead = dead_letters(pubsub_project, PREFIX, queue, expect=len(sent), timeout=30)
        assert sorted(m.message.data for m in dead) == sorted(sent)
        for copy in dead:
            assert copy.message.attributes["dead_letter_reason"], copy
    assert worker.process is not None and worker.process.poll() is None, worker.logs()[-3000:]
    assert pubsub_app.send_task("tests.add", (20, 22)).get(timeout=30) == 42
    # The plain message that fits ran, once.
    assert wait_for(lambda: ledger.llen("runs") > 0, timeout=15)
    assert ledger.lrange("runs", 0, -1) == [token]
