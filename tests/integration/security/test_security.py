"""Security checks; docs/security.md (the threat model) says what each test proves.

Each test fails if the protection it names is removed (the doc says how that was checked).
"""

from __future__ import annotations

import base64
import json
import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Producer

from harness.hostile import MarkerWhenUnpickled
from harness.pubsub_helpers import dead_letters, publish_raw
from harness.services import ServiceProcess
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.errors import InvalidRequest
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.storage import GCSStorage, LocalStorage, UnsafeKey
from vividly_tasks.lessons.validation import validate
from vividly_tasks.transport import wire
from vividly_tasks.transport.poison import PoisonMessage

PREFIX = "vividly-"
QUEUE = "vividly"
BROKER_SECRET = "brokerpw-s3cr3t"
BACKEND_SECRET = "backendpw-s3cr3t"
DATABASE_SECRET = "dbpw-s3cr3t"
WRONG_SECRET = "wrongpw-s3cr3t"
SECRETS = (BROKER_SECRET, BACKEND_SECRET, DATABASE_SECRET, WRONG_SECRET)


# --- unsafe content types ------------------------------------------------------------------
@pytest.fixture
def pubsub_app(pubsub_project: str, redis_url: str,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    app = create_app()
    yield app
    app.close()


def pickle_envelope(marker: Path, *, content_type: str, base64_body: bool = True) -> bytes:
    body = pickle.dumps(((MarkerWhenUnpickled(str(marker)),), {}, {}))
    return json.dumps({
        "body": base64.b64encode(body).decode() if base64_body else body.decode("latin-1"),
        "content-type": content_type, "content-encoding": "binary",
        "headers": {"task": "tests.add", "id": str(uuid.uuid4()), "lang": "py"},
        "properties": {"body_encoding": "base64" if base64_body else None,
                       "delivery_info": {"exchange": "", "routing_key": QUEUE}},
    }).encode()


def test_pickle_claimed_on_pubsub_is_dead_lettered_and_never_deserialized(
    pubsub_app: Celery, pubsub_project: str, tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """The envelope says pickle or YAML: the transport refuses it before Kombu or Celery see
    it. Only the attributes say pickle: the body is read as the envelope's JSON (and fails),
    so the worker dead-letters it with the reason. Nothing is unpickled; work goes on."""
    marker = tmp_path / "unpickled"
    pickle_claim = {"content-type": "application/x-python-serialize",
                    "content_type": "application/x-python-serialize"}
    start_worker(concurrency=1).wait_ready()
    publish_raw(pubsub_project, PREFIX, QUEUE,
                pickle_envelope(marker, content_type="application/x-python-serialize"),
                **pickle_claim)
    publish_raw(pubsub_project, PREFIX, QUEUE,
                pickle_envelope(marker, content_type="application/x-yaml", base64_body=False))
    publish_raw(pubsub_project, PREFIX, QUEUE,
                pickle_envelope(marker, content_type="application/json"), **pickle_claim)
    reasons = sorted(m.message.attributes["dead_letter_reason"]
                     for m in dead_letters(pubsub_project, PREFIX, QUEUE, expect=3))
    assert reasons[0].startswith("body is not valid application/json"), reasons
    assert reasons[1:] == [
        "content type 'application/x-python-serialize' refused (accepted: application/json)",
        "content type 'application/x-yaml' refused (accepted: application/json)",
    ]
    assert pubsub_app.send_task("tests.add", (1, 2)).get(timeout=30) == 3
    assert not marker.exists()


def test_a_worker_never_unpickles_a_task_even_where_the_broker_passes_pickle(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """Redis carries any content type; Celery's ``accept_content`` (JSON only) is what
    refuses a pickled task there."""
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    marker = tmp_path / "unpickled"
    worker = start_worker(concurrency=1).wait_ready()
    app = create_app()
    try:
        with Connection(redis_url) as connection:
            Producer(connection).publish(
                [(MarkerWhenUnpickled(str(marker)),), {}, {}], serializer="pickle",
                exchange=Exchange(QUEUE), routing_key=QUEUE,
                headers={"task": "tests.add", "id": str(uuid.uuid4()), "lang": "py"},
            )
        assert app.send_task("tests.add", (2, 3)).get(timeout=30) == 5
        worker.wait_for_log(lambda text: "content type 'application/x-python-serialize' "
                            "refused (the worker accepts application/json)" in text, timeout=10)
    finally:
        app.close()
    assert not marker.exists()


def test_the_app_accepts_and_sends_json_only() -> None:
    conf = create_app(Settings(broker_url="pubsub://p")).conf
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    # The transport's own fence is opt-in; the product app turns it on, JSON only.
    fence = conf.broker_transport_options["accept_content"]
    assert fence == "application/json"
    with pytest.raises(PoisonMessage, match="refused"):
        wire.decode(json.dumps({"body": "gAR9lC4=", "content-type": "application/x-python-"
                                "serialize", "properties": {"body_encoding": "base64"}}).encode(),
                    {}, accepted_content_types=frozenset({fence}))


# --- credentials in logs, reports and remote control ----------------------------------------
@pytest.fixture
def secret_urls(redis_server: ServiceProcess, redis_url: str, postgres_url: str) -> dict[str, str]:
    """Broker, backend and database URLs with passwords (a Redis ACL user; PostgreSQL trusts
    loopback here, so the password is carried but not checked)."""
    with redis.Redis.from_url(redis_url) as client:
        for user, secret in (("broker", BROKER_SECRET), ("backend", BACKEND_SECRET)):
            client.acl_setuser(user, enabled=True, passwords=[f"+{secret}"], keys=["*"],
                               channels=["*"], commands=["+@all"])
    host_db = redis_url.removeprefix("redis://")
    return {
        "BROKER_URL": f"redis://broker:{BROKER_SECRET}@{host_db}",
        "RESULT_BACKEND": f"redis://backend:{BACKEND_SECRET}@{host_db}",
        "DATABASE_URL": postgres_url.replace("postgres@", f"postgres:{DATABASE_SECRET}@", 1),
    }


def test_a_worker_never_shows_its_urls_passwords(
    secret_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., WorkerProcess], start_entrypoint: Callable[..., WorkerProcess],
) -> None:
    """Startup banner, task logs, ``celery inspect conf``/``report`` (what Flower shows) and the
    entrypoint's failure summary mask every password."""
    for name, value in secret_urls.items():
        monkeypatch.setenv(name, value)
    worker = start_worker(concurrency=1).wait_ready()
    app = create_app()
    try:
        assert app.send_task("tests.log_something", ("hello",)).get(timeout=30) is None
        inspect = app.control.inspect(timeout=10, limit=1)  # returns at the first reply
        shown = json.dumps([inspect.conf(with_defaults=True), inspect.report()])
    finally:
        app.close()
    assert "broker:**" in worker.logs() or "broker:********" in worker.logs()
    assert "redis://broker:" in shown and "vividly_settings" in shown
    # A wrong password: the connection fails and the failure is reported, still masked.
    monkeypatch.setenv("BROKER_URL", secret_urls["BROKER_URL"].replace(BROKER_SECRET,
                                                                         WRONG_SECRET))
    monkeypatch.setenv("WORKER_CONNECT_TIMEOUT", "1")
    failed = start_entrypoint()
    assert failed.wait(60) != 0
    summary = failed.summary()
    assert "broker" in json.dumps(summary)
    for text in (worker.logs(), shown, failed.logs()):
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://127.0.0.1:6379/0?password=s3cr3t&db=1",
         "redis://127.0.0.1:6379/0?password=****&db=1"),
        ("postgresql://db/vividly?sslmode=require&password=s3cr3t",
         "postgresql://db/vividly?sslmode=require&password=****"),
        ("rediss://app:s3cr3t@host/0?ssl_cert_reqs=required",
         "rediss://app:****@host/0?ssl_cert_reqs=required"),
        ("redis://:s3cr3t@[::1", "redis://****"),  # unreadable: nothing of it is shown
    ],
)
def test_secrets_in_url_queries_and_unreadable_urls_are_masked(url: str, masked: str) -> None:
    settings = Settings(broker_url=url, result_backend=url, database_url=url)
    redacted = settings.redacted()
    assert redacted["broker_url"] == redacted["result_backend"] == masked
    assert "s3cr3t" not in json.dumps(redacted)


# --- input size limits -----------------------------------------------------------------------
def test_oversize_request_fields_are_refused_quickly_whatever_their_size() -> None:
    started = time.monotonic()
    for size in (201, 10**6, 8 * 10**6):
        with pytest.raises(InvalidRequest, match="the limit is 200"):
            validate(topic="x" * size, modality="text", max_topic_chars=200,
                     max_field_chars=100)
    with pytest.raises(InvalidRequest, match="the limit is 100"):
        validate(topic="Fractions", modality="text", subject="y" * 10**6, max_topic_chars=200,
                 max_field_chars=100)
    assert time.monotonic() - started < 5


# --- storage keys cannot leave their root or prefix -----------------------------------------
ESCAPING_KEYS = [
    "../outside", "a/../../outside", "/etc/passwd", "//host/share", "C:\\outside", "a\\..\\b",
    "%2e%2e/outside", "..%2foutside", "a%2F..%2F..%2Foutside", "lesson.md\n", "a\n/b",
    "a/\x00b", "a/\u2025/b", "\uff0e\uff0e/outside", "~/outside", ".", "", "a//b", "a/",
]


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_storage_keys_cannot_escape_the_root_or_prefix(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # no request is made
    local = LocalStorage(tmp_path / "root")
    source = tmp_path / "artifact"
    source.write_text("lesson")
    with pytest.raises(UnsafeKey):
        local.put_file(key, source, "text/plain")
    with pytest.raises(UnsafeKey):
        GCSStorage("bucket", "lessons").put_file(key, source, "text/plain")
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")] == ["artifact"]
