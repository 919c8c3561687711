"""Properties of the receive path and of request validation, over generated hostile input.

Whatever bytes and attributes arrive on a subscription end one of three ways: a task that
Celery runs, a dead letter with a reason (``PoisonMessage`` in the transport, or the
worker consumer's ``task_message_problem``), or Celery's own rejection of an unknown or invalid
task; never an exception that escapes into the worker. The same for request fields: a
``LessonSpec`` within the limits, or ``InvalidRequest`` naming the problem.

The worker-level check of the same strategies is in test_properties_worker.py.
"""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import pickle
import unicodedata
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from celery.exceptions import InvalidTaskError, Reject
from celery.worker.request import Request
from google.pubsub_v1 import PubsubMessage
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from kombu import Connection
from kombu.serialization import prepare_accept_content
from kombu.transport.virtual import Message as VirtualMessage

import harness.apps.worker_tasks  # noqa: F401  (registers the tests.* tasks)
import vividly_tasks.lessons.tasks  # noqa: F401  (registers the vividly.* tasks, as a worker does)
from harness.hostile import UNSAFE_CONTENT_TYPES, MarkerWhenUnpickled, json_scalars, json_values
from vividly_tasks import create_app
from vividly_tasks.lessons.database import ContentDatabase
from vividly_tasks.lessons.errors import InvalidRequest
from vividly_tasks.lessons.repository import ContentRepository
from vividly_tasks.lessons.requests import submit
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status
from vividly_tasks.lessons.storage import GCSStorage, LocalStorage, UnsafeKey, check_key
from vividly_tasks.lessons.validation import validate
from vividly_tasks.transport import limits, plain_messages, wire
from vividly_tasks.transport.inbound import eta_timestamp
from vividly_tasks.transport.poison import PoisonMessage
from vividly_tasks.transport.provisioning import SubscriptionSpec
from vividly_tasks.transport.routing import QueueRoute
from vividly_tasks.worker.guarded_consumer import task_message_problem
from vividly_tasks.worker.plain_message_tasks import check_arguments

#: A few hundred examples in the suite in all; no deadline (a loaded 2-core box is slow).
PROPERTY = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
QUEUE = "vividly"
TASK_NAMES = ("tests.add", "vividly.generate_content", "vividly.submit_content", "no.such.task")


# --- strategies: what a hostile or careless producer could put on a topic -------------------
timestamps = st.datetimes().map(lambda d: d.isoformat()) | st.sampled_from(
    ["0001-01-01T00:00:00", "9999-12-31T23:59:59", "not a date", ""]
)
HEADER_VALUES = {
    "task": st.sampled_from(TASK_NAMES) | json_values,
    "id": st.uuids().map(str) | json_values,
    "lang": st.just("py") | json_values,
    "eta": timestamps | json_values,
    "expires": timestamps | json_values,
    "retries": st.integers(-3, 3) | json_values,
    "timelimit": st.tuples(json_scalars, json_scalars).map(list) | json_values,
    "shadow": json_values,
    "root_id": json_values,
    "parent_id": json_values,
    "argsrepr": json_values,
    "compression": st.sampled_from(["application/x-gzip", "zlib"]),
}
celery_headers = st.fixed_dictionaries({}, optional=HEADER_VALUES)
one_header = st.sampled_from(sorted(HEADER_VALUES)).flatmap(
    lambda name: HEADER_VALUES[name].map(lambda value: {name: value})
)
celery_bodies = (
    st.tuples(st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=5), json_values,
                                                                 max_size=2),
              st.none() | json_values)
    .map(lambda parts: json.dumps(list(parts)))
    | json_values.map(json.dumps)
    | st.text(max_size=40)
)
content_types = st.sampled_from(["application/json", *UNSAFE_CONTENT_TYPES, "text/plain",
                                 "application/data", ""]) | json_values
properties = st.fixed_dictionaries(
    {},
    optional={
        "body_encoding": st.sampled_from([None, "base64", "utf-8"]) | json_values,
        "delivery_info": st.fixed_dictionaries(
            {}, optional={"exchange": st.sampled_from(["", QUEUE]) | json_values,
                          "routing_key": st.just(QUEUE) | json_values}
        ) | json_values,
        "priority": json_values,
        "correlation_id": json_values,
    },
) | json_values
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "body": celery_bodies | json_values,
        "content-type": content_types,
        "content-encoding": st.sampled_from(["utf-8", "binary", "latin-1", "nope"]) | json_values,
        "headers": celery_headers | json_values,
        "properties": properties,
    },
)
# Celery messages with one or more fields generated: most run, so Celery's side is exercised.
near_celery_messages = st.builds(
    lambda extra, body: {
        "body": body, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"lang": "py", "task": "tests.add", "id": "6f1c", **extra},
        "properties": {"body_encoding": None,
                       "delivery_info": {"exchange": "", "routing_key": QUEUE}},
    },
    st.just({}) | one_header, celery_bodies,
)
envelopes = near_celery_messages | envelopes
message_data = (
    envelopes.map(lambda e: json.dumps(e).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)
attributes = st.dictionaries(
    st.sampled_from(["exchange", "routing_key", "kombu-envelope", "task", "task_id",
                     "content-type", "content_type"]) | st.text(min_size=1, max_size=10),
    st.sampled_from(["", QUEUE, "1", *UNSAFE_CONTENT_TYPES]) | st.text(max_size=20),
    max_size=5,
)


@pytest.fixture(scope="module")
def celery_app() -> Iterator[Any]:
    app = create_app(Settings(broker_url="memory://", result_backend="cache+memory://"))
    yield app
    app.close()


@pytest.fixture(scope="module")
def kombu_channel() -> Iterator[Any]:
    """A real Kombu virtual channel to build messages with (decode_body is the base class's)."""
    with Connection("memory://") as connection:
        yield connection.default_channel


def route() -> QueueRoute:
    spec = SubscriptionSpec("project", f"vividly-{QUEUE}", f"vividly-{QUEUE}", 60, 5, 1.0, 600.0)
    return QueueRoute(QUEUE, spec)


def receive(data: bytes, attrs: dict[str, str], channel: Any, app: Any,
            bound_task: str | None = None) -> str:
    """What the channel and then the worker do with one received message, without the
    network: the outcome is ``dead-letter: <reason>``, ``celery-rejects`` or ``runs``. Any
    other exception is a crash in the worker (the property is that none happens).
    ``bound_task``: the queue is bound to that task (plain messages, PUBSUB_PLAIN_MESSAGE_TASKS).
    """
    received = PubsubMessage(data=data, attributes=attrs, message_id="1")
    try:
        payload = plain_messages.decode(received, queue=QUEUE, task=bound_task)  # JSON only
    except PoisonMessage as reason:
        assert str(reason)
        return f"dead-letter: {reason}"
    # Channel.accept: routing and lease bookkeeping read these.
    info = payload["properties"]["delivery_info"]
    route().accepts(info["exchange"], info["routing_key"])
    eta_timestamp(payload["headers"].get("eta"))
    payload["properties"]["delivery_tag"] = uuid.uuid4().hex
    message = VirtualMessage(payload, channel=channel)
    message.accept = prepare_accept_content(app.conf.accept_content)  # as the worker sets it
    problem = task_message_problem(message)
    if problem is not None:
        assert problem
        return f"dead-letter: {problem}"
    task = app.tasks.get(message.headers["task"])
    if task is None:
        return "celery-rejects"  # Consumer.on_unknown_task: rejected, dead-lettered with a reason
    try:
        request = Request(message, app=app, hostname="worker@test", task=task)
    except InvalidTaskError:
        return "celery-rejects"  # Consumer.on_invalid_task (bad eta/expires)
    assert len(request.time_limits) == 2  # the pool unpacks them
    assert isinstance(request.args, list | tuple) and isinstance(request.kwargs, dict)
    task.push_request(**message.headers)
    try:  # the task's before_start: a plain message must fit the signature
        check_arguments(task, tuple(request.args), request.kwargs)
    except Reject as reject:
        assert str(reject.reason)
        return f"dead-letter: {reject.reason}"
    finally:
        task.pop_request()
    return "runs"


# --- the receive path -----------------------------------------------------------------------
BINDINGS = [pytest.param(None, id="unbound"),
            pytest.param("vividly.content_message", id="bound-to-content_message")]


@pytest.mark.parametrize("bound_task", BINDINGS)
@PROPERTY
@given(data=message_data, attrs=attributes)
def test_any_bytes_and_attributes_run_or_are_dead_lettered_with_a_reason(
    data: bytes, attrs: dict[str, str], bound_task: str | None, kombu_channel: Any,
    celery_app: Any,
) -> None:
    receive(data, attrs, kombu_channel, celery_app, bound_task)


@pytest.mark.parametrize("bound_task", BINDINGS)
@PROPERTY
@given(envelope=envelopes, attrs=attributes)
# Holes found by this property, kept as fixed examples (each once broke the receive path).
@example(envelope={"body": "", "content-type": [], "properties": {}}, attrs={})
@example(envelope={"body": "\x80", "content-type": "application/json",
                   "properties": {"body_encoding": "base64"}}, attrs={})
@example(envelope={"body": "", "content-type": "application/json",
                   "properties": {"delivery_info": "x"}}, attrs={})
@example(envelope={"body": "[[], {}, null]", "content-type": "application/json",
                   "headers": {"task": "tests.add", "id": "6f1c", "eta": ""},
                   "properties": {}}, attrs={"kombu-envelope": "1"})
@example(envelope={"body": "[[1, 2], {}, null]", "content-type": "application/json",
                   "headers": {"task": ["tests.add"], "id": "6f1c"},
                   "properties": {}}, attrs={"kombu-envelope": "1"})
def test_any_envelope_runs_or_is_dead_lettered_with_a_reason(
    envelope: dict[str, Any], attrs: dict[str, str], bound_task: str | None,
    kombu_channel: Any, celery_app: Any,
) -> None:
    event(receive(json.dumps(envelope).encode(), attrs, kombu_channel, celery_app,
                  bound_task).split(":")[0])


@PROPERTY
@given(fields=st.dictionaries(
    st.sampled_from(["request_id", "topic", "modality", "subject", "grade_level", "colour"]),
    field_values_lazy := st.deferred(lambda: field_values), max_size=5,
), attrs=attributes)
def test_any_plain_json_object_on_a_bound_queue_runs_or_is_dead_lettered(
    fields: dict[str, Any], attrs: dict[str, str], kombu_channel: Any, celery_app: Any
) -> None:
    outcome = receive(json.dumps(fields).encode(), attrs, kombu_channel, celery_app,
                      "vividly.content_message")
    assert outcome == "runs" or outcome.startswith("dead-letter: "), outcome


@PROPERTY
@given(
    content_type=st.sampled_from(UNSAFE_CONTENT_TYPES),
    claimed_in=st.sampled_from(["envelope", "attributes", "both"]),
    body_encoding=st.sampled_from(["base64", None]),
)
def test_a_message_claiming_an_unsafe_content_type_is_never_deserialized(
    content_type: str, claimed_in: str, body_encoding: str | None, kombu_channel: Any,
    celery_app: Any, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    marker = tmp_path_factory.mktemp("pickle") / "unpickled"
    body = pickle.dumps(MarkerWhenUnpickled(str(marker)))
    envelope = {
        "body": base64.b64encode(body).decode() if body_encoding else body.decode("latin-1"),
        "content-type": content_type if claimed_in != "attributes" else "application/json",
        "content-encoding": "binary",
        "headers": {"task": "tests.add", "id": str(uuid.uuid4())},
        "properties": {"body_encoding": body_encoding},
    }
    attrs = {"content-type": content_type} if claimed_in != "envelope" else {}
    outcome = receive(json.dumps(envelope).encode(), attrs, kombu_channel, celery_app)
    assert outcome.startswith("dead-letter: "), outcome
    assert not marker.exists()


# --- the receive limits: hostile sizes, expansions and depths --------------------------------
#: Small limits, so that examples cross them without megabytes of data per example.
SMALL_LIMITS = limits.ReceiveLimits(
    accept_compression=limits.accepted_compressions(["gzip", "bzip2", "xz"]),
    max_decoded_bytes=64 * 1024, max_json_items=5_000, max_json_depth=128,
)
COMPRESSORS = {"gzip": lambda raw: zlib.compress(raw, 9), "zlib": zlib.compress,
               "bzip2": bz2.compress, "application/x-bz2": bz2.compress, "xz": lzma.compress,
               "lzma": lzma.compress}
#: JSON bodies and their nesting depth: deep (up to 200,000), wide (up to 100,000 items,
#: ~1000:1 deflated), or any value.
json_shapes = st.one_of(
    (st.sampled_from([1, 128, 129, 1_000, 200_000]) | st.integers(1, 200_000)).map(
        lambda depth: ("[" * depth + "]" * depth, depth)),
    (st.sampled_from([0, 2_400, 2_600, 33_000, 100_000]) | st.integers(0, 100_000)).map(
        lambda n: ("[" + "0," * n + "0]", 1)),
    json_values.map(lambda value: (json.dumps(value), 0)),
)


def structural(text: str | bytes) -> int:
    return sum(limits.count(text, char) for char in limits.STRUCTURAL)


@PROPERTY
@given(shape=json_shapes, compression=st.none() | st.sampled_from(sorted(COMPRESSORS)),
       accepted=st.booleans(), extra_attributes=st.just(0) | st.integers(0, 300))
@example(shape=("[" * 129 + "]" * 129, 129), compression=None, accepted=True, extra_attributes=0)
@example(shape=("[" + "0," * 40_000 + "0]", 1), compression="bzip2", accepted=True,
         extra_attributes=0)
def test_every_expansion_depth_and_attribute_count_is_settled_as_the_limits_say(
    shape: tuple[str, int], compression: str | None, accepted: bool, extra_attributes: int
) -> None:
    """A JSON body, maybe compressed (opted in or not), under up to 300 extra attributes: it
    arrives decoded exactly, or is refused with the first limit it is beyond, in the order
    the receive path checks them; never anything else."""
    text, depth = shape
    raw = text.encode()
    headers: dict[str, Any] = {"task": "tests.add", "id": "6f1c"}
    if compression is not None:
        body = base64.b64encode(COMPRESSORS[compression](raw)).decode()
        headers["compression"] = compression
    else:
        body = text
    data = json.dumps({
        "body": body, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": headers,
        "properties": {"body_encoding": "base64" if compression else None,
                       "delivery_info": {"exchange": "", "routing_key": QUEUE}},
    }).encode()
    attrs = {"kombu-envelope": "1", **{f"x{i}": "v" for i in range(extra_attributes)}}
    limits_here = SMALL_LIMITS if accepted else replace(SMALL_LIMITS,
                                                        accept_compression=frozenset())
    expected = next((reason for beyond, reason in [
        (len(attrs) > limits.MAX_ATTRIBUTES, "over Pub/Sub's limit of 100"),
        (structural(data) > SMALL_LIMITS.max_json_items, "data has"),
        (compression is not None and not accepted, "does not accept"),
        (compression is not None and len(raw) > SMALL_LIMITS.max_decoded_bytes,
         "decodes to more than"),
        (structural(text) > SMALL_LIMITS.max_json_items, "body has"),
        (depth > SMALL_LIMITS.max_json_depth, "body is JSON nested deeper than 128 levels"),
    ] if beyond), None)
    message = PubsubMessage(data=data, attributes=attrs, message_id="1")
    try:
        payload = plain_messages.decode(message, queue=QUEUE, task=None, limits=limits_here)
    except PoisonMessage as reason:
        event(f"refused: {expected}")
        assert expected is not None and expected in str(reason), (expected, str(reason))
        return
    event("arrived")
    assert expected is None
    assert "compression" not in payload["headers"]
    assert payload["properties"]["body_encoding"] is None
    assert payload["body"] == text


@PROPERTY
@given(
    body=st.text(max_size=50) | st.binary(max_size=50),
    headers=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=4),
    exchange=st.text(max_size=10),
    routing_key=st.text(max_size=10),
)
def test_what_the_channel_encodes_decodes_to_the_same_message(
    body: str | bytes, headers: dict[str, Any], exchange: str, routing_key: str
) -> None:
    text, body_encoding = wire.text_body(body, "utf-8" if isinstance(body, str) else "binary")
    message = {
        "body": text, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": headers,
        "properties": {"body_encoding": body_encoding,
                       "delivery_info": {"exchange": exchange, "routing_key": routing_key}},
    }
    envelope = wire.encode(message)
    decoded = wire.decode(envelope.data, envelope.attributes)
    assert decoded["body"] == text
    assert decoded["headers"] == json.loads(json.dumps(headers))
    assert decoded["properties"]["delivery_info"] == {"exchange": exchange,
                                                      "routing_key": routing_key}
    raw = base64.b64decode(text) if body_encoding == "base64" else text
    assert raw == body


@PROPERTY
@given(
    original=st.dictionaries(st.text(min_size=1, max_size=20),
                             st.text(max_size=300).map(wire.attribute_text), max_size=100),
    reason=st.text(max_size=2000) | st.text(alphabet="€ü漢🙂", min_size=300, max_size=1200),
)
@example(original={f"attribute-{i}": "v" for i in range(100)}, reason="full")
@example(original={}, reason="€" * 1000)
def test_a_dead_letter_copy_fits_pubsub_attribute_limits(
    original: dict[str, str], reason: str
) -> None:
    ours = {"dead_letter_reason": reason, "original_message_id": "1"}
    attributes = wire.copy_attributes(original, ours)
    assert len(attributes) <= limits.MAX_ATTRIBUTES
    assert all(len(v.encode()) <= limits.MAX_ATTRIBUTE_VALUE_BYTES for v in attributes.values())
    assert reason.startswith(attributes["dead_letter_reason"])
    assert len(attributes["dead_letter_reason"]) >= min(len(reason), 256)


@PROPERTY
@given(eta=timestamps | st.text(max_size=30) | json_values)
@example(eta="0001-01-01T00:00:00")
def test_any_eta_header_is_a_time_or_none(eta: Any) -> None:
    assert eta_timestamp(eta) is None or isinstance(eta_timestamp(eta), float)


# --- request validation and the submit path --------------------------------------------------
LIMITS = {"max_topic_chars": 200, "max_field_chars": 100}
# Text as people and programs send it: mostly words, sometimes control or odd characters,
# long runs of whitespace, or not text at all (a task's arguments are any JSON).
field_text = (
    st.text(alphabet=st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=250)
    | st.text(max_size=300)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
    | st.builds(lambda a, space, b: a + space + b,
                st.sampled_from(["grade", "Fractions", "K", "3"]),
                st.text(alphabet=" \t\n\u3000\u00a0", min_size=1, max_size=400),
                st.sampled_from(["3", "12th", "and decimals", ""]))
)
field_values = field_text | st.none() | json_values
modalities = (
    st.sampled_from(["text", "video"]) | st.sampled_from(["TEXT", " text", "audio", ""])
    | json_values
)


@PROPERTY
@given(topic=field_values, modality=modalities, subject=field_values, grade=field_values)
@example(topic=[], modality="text", subject=None, grade=None)
def test_any_request_fields_validate_within_limits_or_say_what_is_wrong(
    topic: Any, modality: Any, subject: Any, grade: Any
) -> None:
    try:
        spec = validate(topic=topic, modality=modality, subject=subject, grade_level=grade,
                        **LIMITS)
    except InvalidRequest as exc:
        assert str(exc)
        return
    assert spec.modality.value == modality
    assert 0 < len(spec.topic) <= LIMITS["max_topic_chars"]
    assert 0 < len(spec.subject) <= LIMITS["max_field_chars"]
    assert spec.grade is None or 0 <= spec.grade <= 12
    for value in (spec.topic, spec.subject):
        assert value == value.strip()
        assert not any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Co", "Cn"} for c in value)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContentRepository]:
    database = ContentDatabase(f"sqlite:///{tmp_path_factory.mktemp('db') / 'content.sqlite'}")
    database.migrate()
    yield ContentRepository(database)
    database.dispose()


# Requests that pass validation more often, so that what submit stores is looked at.
spaced_words = st.lists(
    st.sampled_from(["grade", "3", "12th", "K", "Fractions", "and", "decimals"]),
    min_size=1, max_size=4,
).flatmap(lambda words: st.lists(
    st.text(alphabet=" \t\n\u3000\u00a0", min_size=1, max_size=150),
    min_size=len(words), max_size=len(words),
).map(lambda spaces: "".join(w + s for w, s in zip(words, spaces, strict=True))))


spaced_grades = st.builds(
    lambda word, space, number: word + space + number,
    st.sampled_from(["grade", "Grade", ""]),
    st.builds(str.__mul__, st.sampled_from(" \t\n\u3000"), st.integers(1, 300)),
    st.sampled_from(["3", "12th", "K"]),
)


@PROPERTY
@given(topic=spaced_words, modality=st.sampled_from(["text", "video"]),
       subject=st.none() | spaced_words, grade=spaced_grades)
@example(topic="Fractions", modality="text", subject=None, grade="grade" + " " * 150 + "3")
def test_submit_stores_only_bounded_fields_or_writes_nothing(
    topic: Any, modality: Any, subject: Any, grade: Any, repository: ContentRepository
) -> None:
    before = len(repository.list_by_status(Status.QUEUED, limit=10_000))
    sent: list[str] = []
    try:
        row = submit(repository, lambda request_id, _: sent.append(request_id), topic=topic,
                     modality=modality, subject=subject, grade_level=grade, **LIMITS)
    except InvalidRequest as exc:
        event(f"invalid: {str(exc).split(' ')[0]}")
        assert sent == []
        assert len(repository.list_by_status(Status.QUEUED, limit=10_000)) == before
        assert repository.list_by_status(Status.PENDING) == []
        return
    assert sent == [str(row.id)] and row.status == Status.QUEUED
    assert len(row.topic) <= LIMITS["max_topic_chars"]
    for value in (row.subject, row.grade_level):
        assert value is None or len(value) <= LIMITS["max_field_chars"]


# --- storage keys ---------------------------------------------------------------------------
key_text = (
    st.text(max_size=40)
    | st.lists(st.sampled_from(["..", ".", "", "a", "lesson.md", "%2e%2e", "%2F", "..%2f",
                                "\\", "/", "C:", "~", "\n", "\x00", "é"]), max_size=6)
    .map("/".join)
    | st.lists(st.sampled_from(["..", ".", "a", "%2e", "\n", "/"]), max_size=6).map("".join)
)


@pytest.fixture(scope="module")
def gcs_storage() -> Iterator[GCSStorage]:
    """A GCS storage object (no request is made: only its object names are looked at)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
        yield GCSStorage("bucket", "lessons")


@PROPERTY
@given(key=key_text)
@example(key="lesson.md\n")
def test_a_storage_key_is_refused_or_stays_under_its_root_and_prefix(
    key: str, tmp_path_factory: pytest.TempPathFactory, gcs_storage: GCSStorage
) -> None:
    root = tmp_path_factory.getbasetemp() / "storage-root"
    local = LocalStorage(root)
    try:
        check_key(key)
    except UnsafeKey:
        for unsafe in (lambda: local.uri(key), lambda: gcs_storage.uri(key)):
            with pytest.raises(UnsafeKey):
                unsafe()
        return
    path = Path(unquote(urlsplit(local.uri(key)).path))
    assert path.is_relative_to(local.root) and path != local.root
    name = gcs_storage.uri(key).removeprefix("gs://bucket/")
    assert name.startswith("lessons/")
    segments = name.split("/")
    assert all(s not in {"", ".", ".."} and s.isprintable() and s.isascii() for s in segments)
    assert "\\" not in name and "%" not in name
