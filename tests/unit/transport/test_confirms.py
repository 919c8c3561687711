"""confirms.py's rules without a server: batching into requests, retries of transient errors
until a message's deadline, one recreation of a missing topic, the failures reported. The
data plane here is a stand-in for our own stubs.py (the emulator tests cover the real one)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from google.api_core import exceptions as google_errors

from harness.waiting import wait_for
from vividly_tasks.transport import confirms
from vividly_tasks.transport.confirms import (
    MESSAGES_PER_REQUEST,
    Pending,
    PublishFailed,
    PublishPipeline,
    _requests,
)
from vividly_tasks.transport.stubs import PubsubMessage

TOPIC = "projects/p/topics/vividly-q"


class ScriptedDataPlane:
    """Answers each Publish request with the next scripted error (None: success)."""

    def __init__(self, *errors: Exception | None) -> None:
        self.errors = list(errors)
        self.requests: list[list[Any]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, messages: list[Any], *, timeout: float) -> list[str]:
        with self.lock:
            self.requests.append(list(messages))
            error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        return [str(i) for i in range(len(messages))]


def message(task_id: str) -> Any:
    return PubsubMessage(data=b"{}", attributes={"task": "t.x", "task_id": task_id})


def pipeline(plane: ScriptedDataPlane, bound: int = 10) -> PublishPipeline:
    return PublishPipeline(lambda: plane, max_in_flight=bound)  # type: ignore[arg-type,return-value]


def test_requests_respect_pubsubs_per_request_limits() -> None:
    items = [Pending(TOPIC, message(str(i)), str(i), 0.0, 10) for i in range(2500)]
    items.append(Pending("projects/p/topics/other", message("o"), "o", 0.0, 10))
    sizes = [(topic, len(chunk)) for topic, chunk in _requests(items)]
    assert sizes == [(TOPIC, MESSAGES_PER_REQUEST), (TOPIC, MESSAGES_PER_REQUEST), (TOPIC, 500),
                     ("projects/p/topics/other", 1)]
    big = [Pending(TOPIC, message(str(i)), str(i), 0.0, 4_000_000) for i in range(3)]
    assert [len(chunk) for _, chunk in _requests(big)] == [2, 1]


def test_a_transient_error_is_retried_and_then_confirmed() -> None:
    plane = ScriptedDataPlane(google_errors.ServiceUnavailable("down"), None)
    pipe = pipeline(plane)
    pipe.submit(TOPIC, message("a"), timeout_seconds=10)
    pipe.flush(5)
    assert (pipe.confirmed, pipe.in_flight, len(plane.requests)) == (1, 0, 2)


def test_a_transient_error_past_the_deadline_fails_naming_the_task() -> None:
    plane = ScriptedDataPlane(*[google_errors.ServiceUnavailable("down")] * 1000)
    pipe = pipeline(plane)
    pipe.submit(TOPIC, message("late"), timeout_seconds=0.3)
    with pytest.raises(PublishFailed, match=r"t\.x\[late\]: Pub/Sub unavailable") as raised:
        pipe.flush(5)
    assert raised.value.labels == ["t.x[late]"] and pipe.in_flight == 0
    pipe.flush(1)  # reported once


def test_a_missing_topic_is_recreated_once_when_auto_creation_is_on() -> None:
    recreated: list[str] = []
    plane = ScriptedDataPlane(google_errors.NotFound("gone"), None)
    pipe = pipeline(plane)
    pipe.submit(TOPIC, message("a"), timeout_seconds=10, recreate_topic=recreated.append)
    pipe.flush(5)
    assert recreated == [TOPIC] and pipe.confirmed == 1

    plane.errors = [google_errors.NotFound("gone"), google_errors.NotFound("still gone")]
    pipe.submit(TOPIC, message("b"), timeout_seconds=10, recreate_topic=recreated.append)
    with pytest.raises(PublishFailed, match=r"t\.x\[b\]: .* does not exist"):
        pipe.flush(5)


def test_the_next_publish_raises_an_earlier_failure() -> None:
    plane = ScriptedDataPlane(google_errors.PermissionDenied("no"))
    pipe = pipeline(plane)
    pipe.submit(TOPIC, message("denied"), timeout_seconds=10)
    threading.Event().wait(0.3)  # the sender thread answers
    with pytest.raises(PublishFailed, match=r"t\.x\[denied\]: permission pubsub\.topics\.publish"):
        pipe.submit(TOPIC, message("next"), timeout_seconds=10)


def test_confirmations_reach_the_hook_of_the_connection_that_published() -> None:
    plane = ScriptedDataPlane()
    pipe = pipeline(plane, bound=3)
    seen: list[str] = []
    for n in range(7):
        pipe.submit(TOPIC, message(str(n)), timeout_seconds=10, on_confirmed=seen.extend)
    pipe.flush(5)
    assert sorted(seen) == sorted(f"t.x[{n}]" for n in range(7))
    assert pipe.peak_in_flight <= 3


def test_messages_queued_within_the_linger_share_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(confirms, "LINGER_SECONDS", 0.5)
    plane = ScriptedDataPlane()
    pipe = pipeline(plane, bound=100)
    for n in range(20):
        pipe.submit(TOPIC, message(str(n)), timeout_seconds=10)
    wait_for(lambda: pipe.confirmed == 20, 5, "20 confirmed")
    assert [len(request) for request in plane.requests] == [20]


def test_a_flush_and_a_full_bound_send_without_lingering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confirms, "LINGER_SECONDS", 30.0)
    plane = ScriptedDataPlane()
    pipe = pipeline(plane, bound=3)
    started = time.monotonic()
    pipe.submit(TOPIC, message("a"), timeout_seconds=60)
    pipe.flush(5)  # sends now, not after the linger
    for n in range(4):  # the fourth waits for room, which the third's full bound sent for
        pipe.submit(TOPIC, message(str(n)), timeout_seconds=60)
    pipe.flush(5)
    assert time.monotonic() - started < 5
    assert [len(request) for request in plane.requests] == [1, 3, 1]
    assert pipe.peak_in_flight == 3


def test_more_messages_than_a_request_takes_are_sent_without_lingering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(confirms, "LINGER_SECONDS", 30.0)
    plane = ScriptedDataPlane()
    pipe = pipeline(plane, bound=1000)
    for n in range(confirms.LINGER_MESSAGES):
        pipe.submit(TOPIC, message(str(n)), timeout_seconds=60)
    wait_for(lambda: pipe.confirmed == confirms.LINGER_MESSAGES, 5, "a full request confirmed")
