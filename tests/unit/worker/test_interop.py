"""Plain messages without a broker: the transport's translation, the worker's checks, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from celery.exceptions import ImproperlyConfigured, Reject
from google.pubsub_v1 import PubsubMessage
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from vividly_tasks import create_app
from vividly_tasks.lessons.product import consumed_queues
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status
from vividly_tasks.lessons.tasks import content_services
from vividly_tasks.transport import plain_messages
from vividly_tasks.transport.poison import PoisonMessage
from vividly_tasks.worker.plain_message_tasks import check_arguments, check_bindings

TASK = "tests.record_plain_message"


def received(data: bytes, **attributes: str) -> PubsubMessage:
    return PubsubMessage(
        data=data, attributes=attributes, message_id="1234",
        publish_time=datetime(2026, 11, 28, 14, 0, 1, tzinfo=UTC),
    )


def decode(message: PubsubMessage, task: str | None = TASK) -> dict[str, Any]:
    return plain_messages.decode(message, queue="partner-events", task=task)


def test_a_plain_message_on_a_bound_queue_becomes_a_call_with_its_pubsub_facts() -> None:
    payload = decode(received(b'{"token": "t", "count": 2}', source="node"))
    assert json.loads(payload["body"]) == [[], {"token": "t", "count": 2}, plain_messages.EMBED]
    headers = payload["headers"]
    assert headers["task"] == TASK and headers["id"] == payload["properties"]["correlation_id"]
    assert headers["pubsub_attributes"] == {"source": "node"}
    assert headers["pubsub_publish_time"] == "2026-11-28T14:00:01.000000Z"
    assert headers[plain_messages.PLAIN_MESSAGE_HEADER] is True
    info = payload["properties"]["delivery_info"]
    assert info == {"exchange": "", "routing_key": "partner-events"}
    # A redelivery of the same message is the same task; another message is another.
    assert decode(received(b'{"token": "t"}'))["headers"]["id"] == headers["id"]
    other = PubsubMessage(data=b"{}", message_id="5678")
    assert decode(other)["headers"]["id"] != headers["id"]
    assert decode(other)["headers"]["pubsub_publish_time"] is None


def test_an_envelope_on_a_bound_queue_and_anything_on_an_unbound_queue_are_kombu_messages() -> None:
    envelope = json.dumps({"body": "[[], {}, {}]", "content-type": "application/json",
                           "headers": {"task": "tests.add"}, "properties": {}}).encode()
    assert decode(received(envelope, **{"kombu-envelope": "1"}))["headers"] == {"task": "tests.add"}
    with pytest.raises(PoisonMessage, match="not a Kombu envelope"):
        decode(received(b'{"token": "t"}'), task=None)
    with pytest.raises(PoisonMessage, match="data is not UTF-8 text"):
        decode(received(b"\x00\x41\xff\xfe", **{"kombu-envelope": "1"}))


@pytest.mark.parametrize(("data", "reason"), [
    (b"{not json", "plain message: data is not JSON (Expecting property name"),
    (b"\xff\xfe\xfa", "plain message: data is not UTF-8 text, so not JSON"),
    # Leading zero bytes made json.loads guess UTF-16 and call this "not JSON" (soak flake).
    (b"\x00\x41\xff\xfe", "plain message: data is not UTF-8 text, so not JSON"),
    (b"", "plain message: data is not JSON (Expecting value at byte 0)"),
    (b'["a"]', "plain message: data is JSON list, not an object of keyword arguments"),
    (b'{"x": NaN}', "plain message: data is not standard JSON (NaN is not a JSON value)"),
    (b"[" * 100_000 + b"]" * 100_000, "plain message: data is JSON nested too deeply"),
])
def test_data_that_is_not_one_json_object_is_poison_with_the_reason(
    data: bytes, reason: str
) -> None:
    with pytest.raises(PoisonMessage) as raised:
        decode(received(data))
    assert str(raised.value).startswith(reason)


@hypothesis_settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=200),
       attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
def test_decode_is_total(data: bytes, attributes: dict[str, str]) -> None:
    for task in (TASK, None):
        try:
            payload = decode(PubsubMessage(data=data, attributes=attributes), task=task)
        except PoisonMessage as reason:
            assert str(reason)
        else:
            assert isinstance(payload["headers"], dict)


class FakeTask:
    """What check_arguments reads of a Celery task: its request and its run function."""

    def __init__(self, plain: bool) -> None:
        self.request: dict[str, Any] = {plain_messages.PLAIN_MESSAGE_HEADER: plain}

    def run(self, token: str, count: int = 1) -> None:
        del token, count


def test_the_worker_rejects_a_plain_call_that_does_not_fit_the_signature() -> None:
    check_arguments(FakeTask(plain=True), (), {"token": "t", "count": 2})
    with pytest.raises(Reject) as raised:
        check_arguments(FakeTask(plain=True), (), {"token": "t", "colour": "red"})
    assert raised.value.reason == (
        "plain message's JSON does not fit the task's arguments (token, count=1): "
        "got an unexpected keyword argument 'colour'"
    )
    assert raised.value.requeue is False
    check_arguments(FakeTask(plain=False), (), {"colour": "red"})  # Celery messages: untouched


def test_a_binding_to_a_task_the_worker_lacks_stops_it() -> None:
    check_bindings({"a": "tests.add"}, {"tests.add": object()})
    with pytest.raises(ImproperlyConfigured, match=r"b -> tests\.nope"):
        check_bindings({"a": "tests.add", "b": "tests.nope"}, {"tests.add": object()})


def test_the_setting_reaches_the_transport_and_the_consumed_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_URL", "pubsub://p")
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS", '{"api": "vividly.content_message"}')
    settings = Settings()
    assert settings.broker_transport_options()["plain_message_tasks"] == {
        "api": "vividly.content_message"
    }
    assert hash(settings)  # settings stay hashable (content services are cached on them)
    assert list(consumed_queues(settings) or {}) == ["vividly", "api"]
    app = create_app(settings)
    assert sorted(app.amqp.queues) == ["api", "vividly"]
    app.close()
    monkeypatch.delenv("PUBSUB_PLAIN_MESSAGE_TASKS")
    assert consumed_queues(Settings()) is None


@pytest.mark.parametrize("value", ['["api"]', '{"api": ""}', '{"": "t"}'])
def test_a_malformed_binding_setting_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBSUB_PLAIN_MESSAGE_TASKS", value)
    with pytest.raises(ValueError, match=r"JSON object mapping|must not be empty"):
        Settings()


def test_the_transport_option_may_be_json_text() -> None:
    assert plain_messages.parse_bindings('{"a": "t"}') == {"a": "t"}
    assert plain_messages.parse_bindings(None) == {}
    with pytest.raises(ValueError, match="queue name -> task name"):
        plain_messages.parse_bindings({"a": 1})


def test_a_redelivered_content_message_creates_its_request_once() -> None:
    app = create_app()
    content_message = app.tasks["vividly.content_message"]
    fields = {"topic": "Photosynthesis", "modality": "text"}
    try:
        first = content_message.apply(kwargs=fields, task_id="message-1").get()
        again = content_message.apply(kwargs=fields, task_id="message-1").get()
        other = content_message.apply(kwargs=fields, task_id="message-2").get()
        assert first == again != other
        rows = content_services(app.settings).repository.list_by_status(Status.QUEUED)
        assert sorted(str(row.id) for row in rows) == sorted([first, other])
    finally:
        content_services(app.settings).close()
        content_services.cache_clear()
        app.close()
