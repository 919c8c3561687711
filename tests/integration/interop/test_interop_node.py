"""A producer in another language (Node.js, Google's Pub/Sub client)
publishes plain messages to bound queues and a Celery task laid out per docs/wire-format.md;
a real worker runs them, and bad plain messages reach the dead-letter topic with the reason."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.apps.worker_tasks import PLAIN_MESSAGES_KEY
from harness.interop import find_node_producer
from harness.pubsub_helpers import dead_letters
from harness.required import require_service
from harness.waiting import wait_for
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status

PREFIX = "vividly-"


@pytest.fixture(scope="session")
def node_producer() -> Path:
    return require_service(find_node_producer)


def node_publish(producer: Path, project: str, messages: list[dict[str, Any]]) -> list[Any]:
    """Publish from Node.js; one result ({message_id[, task_id]}) per message, in order."""
    completed = subprocess.run(
        ["node", str(producer)], input=json.dumps({"project": project, "messages": messages}),
        check=False, capture_output=True, text=True, timeout=60, cwd=producer.parent,
    )
    assert completed.returncode == 0, completed.stderr
    results: list[Any] = json.loads(completed.stdout)
    assert len(results) == len(messages)
    return results


def reasons_by_message_id(project: str, queue: str, expect: int) -> dict[str, str]:
    received = dead_letters(project, PREFIX, queue, expect=expect, timeout=30)
    return {
        m.message.attributes["original_message_id"]: m.message.attributes["dead_letter_reason"]
        for m in received
    }


def test_node_publishes_plain_messages_and_a_celery_task_that_a_worker_runs(
    node_producer: Path, pubsub_project: str, redis_url: str, ledger: redis.Redis,
    monkeypatch: pytest.MonkeyPatch, start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS",
                       json.dumps({"partner-events": "tests.record_plain_message"}))
    start_worker().wait_ready()  # declares both queues' subscriptions

    plain = {"kind": "plain", "topic": f"{PREFIX}partner-events"}
    published_at = time.time()
    results = node_publish(node_producer, pubsub_project, [
        {**plain, "data": json.dumps({"token": "from-node", "count": 3}),
         "attributes": {"source": "node", "trace": "t-1"}},
        {"kind": "task", "topic": f"{PREFIX}vividly", "task": "tests.record",
         "kwargs": {"token": "celery-from-node"}, "exchange": "vividly", "routing_key": "vividly"},
        {**plain, "data": "{not json"},
        {**plain, "data": json.dumps(["token", "from-node"])},
        {**plain, "data": json.dumps({"token": "x", "colour": "red"})},
        {**plain, "data": json.dumps({"count": 1})},
        # Not bound: a plain message on the task queue is poison, as it always was.
        {"kind": "plain", "topic": f"{PREFIX}vividly", "data": json.dumps({"token": "y"})},
    ])
    good, task, not_json, a_list, unexpected, missing, unbound = results

    seen = json.loads(wait_for(lambda: ledger.lindex(PLAIN_MESSAGES_KEY, 0), 30,
                               "the plain message's task to run"))
    assert seen["token"] == "from-node" and seen["count"] == 3
    assert seen["message_id"] == good["message_id"]
    assert seen["attributes"] == {"source": "node", "trace": "t-1"}
    assert seen["delivery_attempt"] == 1
    publish_time = datetime.fromisoformat(seen["publish_time"].replace("Z", "+00:00"))
    assert abs(publish_time.timestamp() - published_at) < 30

    result_app = create_app()
    try:
        assert result_app.AsyncResult(task["task_id"]).get(timeout=30) == "celery-from-node"
        assert result_app.AsyncResult(seen["task_id"]).get(timeout=30) == "from-node"
    finally:
        result_app.close()

    reasons = reasons_by_message_id(pubsub_project, "partner-events", expect=4)
    task_says = "tests.record_plain_message: plain message's JSON does not fit the task's " \
                "arguments (token, count=1): "
    assert reasons == {
        not_json["message_id"]: "plain message: data is not JSON (Expecting property name "
                                "enclosed in double quotes at byte 1)",
        a_list["message_id"]: "plain message: data is JSON list, not an object of keyword "
                              "arguments",
        unexpected["message_id"]: task_says + "got an unexpected keyword argument 'colour'",
        missing["message_id"]: task_says + "missing a required argument: 'token'",
    }
    [(message_id, unbound_reason)] = reasons_by_message_id(
        pubsub_project, "vividly", expect=1).items()
    assert message_id == unbound["message_id"] and "not a Kombu envelope" in unbound_reason
    assert ledger.llen(PLAIN_MESSAGES_KEY) == 1  # no bad message ran


def test_plain_content_messages_create_or_generate_requests(
    node_producer: Path, pubsub_project: str, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'content.sqlite'}")
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS", json.dumps({
        "content-api": "vividly.content_message",  # both forms
        "legacy-api": "vividly.generate_content",  # the old API's {"request_id": ...} only
    }))
    services = ContentServices.from_settings(Settings())
    try:
        repository = services.repository
        existing = str(repository.insert(topic="Volcanoes", modality="text").id)
        legacy = str(repository.insert(topic="Tides", modality="text").id)
        start_worker().wait_ready()

        content = {"kind": "plain", "topic": f"{PREFIX}content-api"}
        unknown = str(uuid.uuid4())
        results = node_publish(node_producer, pubsub_project, [
            {**content, "data": json.dumps({"request_id": existing})},
            {**content, "data": json.dumps(
                {"topic": "Photosynthesis", "modality": "text", "grade_level": "5"})},
            {**content, "data": json.dumps({"request_id": unknown})},
            {**content, "data": json.dumps({"topic": "Photosynthesis", "modality": "hologram"})},
            {**content, "data": json.dumps({"request_id": existing, "topic": "Volcanoes"})},
            {"kind": "plain", "topic": f"{PREFIX}legacy-api",
             "data": json.dumps({"request_id": legacy})},
            {"kind": "plain", "topic": f"{PREFIX}legacy-api",
             "data": json.dumps({"request_id": unknown})},
        ])
        _, created, unknown_id, hologram, both, _, legacy_unknown = results

        def completed() -> dict[str, Any]:
            return {r.topic: r for r in repository.list_by_status(Status.COMPLETED)}

        done = wait_for(lambda: len(completed()) == 3 and completed(), 60,
                        "three requests to complete")
        assert {str(done["Volcanoes"].id), str(done["Tides"].id)} == {existing, legacy}
        new_rows = [done["Photosynthesis"]]
        assert [(r.modality, r.grade_level) for r in new_rows] == [("text", "5")]

        reasons = reasons_by_message_id(pubsub_project, "content-api", expect=3)
        task_says = "vividly.content_message: InvalidRequest: "
        assert reasons == {
            unknown_id["message_id"]: f"{task_says}unknown request id {unknown}",
            hologram["message_id"]: f"{task_says}modality 'hologram' is not one of text, video",
            both["message_id"]: f"{task_says}request_id given with topic: give one or the other",
        }
        assert created["message_id"] not in reasons
        assert reasons_by_message_id(pubsub_project, "legacy-api", expect=1) == {
            legacy_unknown["message_id"]:
                f"vividly.generate_content: InvalidRequest: unknown request id {unknown}",
        }
    finally:
        services.close()
