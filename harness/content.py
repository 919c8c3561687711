"""Helpers shared by the content tests: broker and database parameters, ffprobe."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from harness.waiting import wait_for
from vividly_tasks.lessons.models import ContentRequest
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings

T = TypeVar("T")

#: Flip to True when vividly_tasks.transport (the Pub/Sub transport) has landed: that is the
#: only change needed to run every content worker test over Pub/Sub as well.
PUBSUB_TRANSPORT_LANDED = True

QUEUE = "vividly"
#: Workers of the content tests also load the fault-injecting storage.
WORKER_INCLUDE = ["--include", "harness.apps.worker_tasks,harness.apps.content_faults"]


def broker_params() -> list[Any]:
    """The brokers a content test runs on: Pub/Sub, the product's broker, once it has landed;
    Redis otherwise (Pub/Sub then shows as skipped)."""
    if PUBSUB_TRANSPORT_LANDED:
        return [pytest.param("pubsub", id="pubsub")]
    return [
        pytest.param("redis", id="redis"),
        pytest.param("pubsub", id="pubsub", marks=pytest.mark.skip(reason="transport not landed")),
    ]


def matrix_params() -> list[Any]:
    """(broker, database) pairs of the content worker tests. Every acceptance test runs over
    Pub/Sub on SQLite and on PostgreSQL, and over Redis on SQLite (the other broker, cheaply);
    before the transport landed: Redis on both databases, Pub/Sub skipped."""
    if PUBSUB_TRANSPORT_LANDED:
        pairs = [("pubsub", "sqlite"), ("pubsub", "postgresql"), ("redis", "sqlite")]
        return [pytest.param(pair, id=f"{pair[1]}-{pair[0]}") for pair in pairs]
    skip = pytest.mark.skip(reason="transport not landed")
    return [
        *(pytest.param(("redis", db), id=f"{db}-redis") for db in ("sqlite", "postgresql")),
        *(pytest.param(("pubsub", db), id=f"{db}-pubsub", marks=skip)
          for db in ("sqlite", "postgresql")),
    ]


ARTIFACTS_TEXT = {"lesson.md", "lesson.html", "manifest.json"}
ARTIFACTS_VIDEO = ARTIFACTS_TEXT | {"lesson.mp4"}

DATABASES = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")]


@dataclass
class ContentEnv:
    """What a content worker test has: the test process's own view of database and storage."""

    broker: BrokerProbe
    database: str
    services: ContentServices

    def row(self, request_id: Any) -> ContentRequest:
        row = self.services.repository.get(request_id)
        assert row is not None, f"no row for {request_id}"
        return row


def ffprobe(path: Path) -> dict[str, Any]:
    output = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         "-show_chapters", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def frame_at(path: Path, seconds: float) -> bytes:
    """One decoded frame (160x90 grey) of a video at ``seconds``."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-ss", f"{seconds:.3f}", "-i", str(path),
         "-frames:v", "1", "-vf", "scale=160:90,format=gray", "-f", "rawvideo", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout


def mean_abs_difference(a: bytes, b: bytes) -> float:
    assert len(a) == len(b) and a
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def check_video(path: Path, manifest: dict[str, Any]) -> None:
    """1280x720 H.264 + audio, duration of the narration, one slide (and chapter) per section."""
    probe = ffprobe(path)
    streams = {stream["codec_type"]: stream for stream in probe["streams"]}
    assert {"video", "audio"} <= streams.keys()
    video = streams["video"]
    assert (video["width"], video["height"], video["codec_name"]) == (1280, 720, "h264")
    narration_seconds = manifest["narration"]["seconds"]
    assert abs(float(probe["format"]["duration"]) - narration_seconds) < 1.0
    assert abs(float(streams["audio"]["duration"]) - narration_seconds) < 1.0
    sections = manifest["sections"]
    assert len(probe["chapters"]) == len(sections) == manifest["video"]["slides"] == 5
    midpoints = [(s["start_seconds"] + s["end_seconds"]) / 2 for s in sections]
    frames = [frame_at(path, seconds) for seconds in midpoints]
    for i, first in enumerate(frames):
        for second in frames[i + 1:]:
            assert mean_abs_difference(first, second) > 1.0, "two sections share a slide"
    if manifest["narration"]["engine"] != "silence":
        assert max_volume_db(path) > -30.0, "the narration is audible"


def max_volume_db(path: Path) -> float:
    """Peak level of a file's audio, in dB (0 is full scale), by ffmpeg's volumedetect."""
    output = subprocess.run(
        ["ffmpeg", "-nostdin", "-i", str(path), "-vn", "-af", "volumedetect", "-f", "null", "-"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stderr
    match = re.search(r"max_volume: (-?[\d.]+) dB", output)
    assert match, output[-2000:]
    return float(match.group(1))


class BrokerProbe:
    """What a test can see of the broker: messages waiting or unacknowledged, dead letters.

    Redis shows its queue and its ``unacked`` hash while workers run. Pub/Sub shows nothing
    of leased messages, so there the workers are stopped first (a stopping worker releases
    what it holds at once) and the subscription must then have nothing left to deliver.
    """

    def __init__(self, kind: str, redis_url: str, project: str | None = None) -> None:
        self.kind = kind
        self.redis_url = redis_url
        self.project = project

    def _redis_backlog(self) -> tuple[int, int]:
        with redis.Redis.from_url(self.redis_url) as client:
            return int(client.llen(QUEUE)), int(client.hlen("unacked"))

    def _subscription(self, dead_letter: bool = False) -> str:
        from vividly_tasks.transport.naming import dead_letter_id, resource_id, subscription_path

        settings = Settings()
        subscription = resource_id(settings.pubsub_prefix, settings.default_queue)
        if dead_letter:
            subscription = dead_letter_id(subscription)
        assert self.project is not None
        return subscription_path(self.project, subscription)

    def _pull(self, subscription: str, *, release: bool) -> list[Any]:
        from google.api_core.exceptions import DeadlineExceeded
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        try:
            # The emulator holds an empty pull until its deadline: keep that short.
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=2)
            received = list(response.received_messages)
            if received and release:
                subscriber.modify_ack_deadline(
                    subscription=subscription, ack_ids=[m.ack_id for m in received],
                    ack_deadline_seconds=0,
                )
            return received
        except DeadlineExceeded:
            return []
        finally:
            subscriber.close()

    def waiting(self) -> int:
        """Messages enqueued and not delivered (no worker running)."""
        if self.kind == "redis":
            return self._redis_backlog()[0]
        return len(self._pull(self._subscription(), release=True))

    def assert_all_acknowledged(self, workers: list[Any], timeout: float = 60.0) -> None:
        if self.kind == "redis":
            wait_for(lambda: self._redis_backlog() == (0, 0), timeout,
                     "every delivery to be acknowledged")
            return
        for worker in workers:
            worker.stop()
        leftover = self._pull(self._subscription(), release=True)
        assert not leftover, f"unacknowledged messages: {leftover}"

    def dead_letter_messages(self) -> list[Any]:
        """The dead letters as Pub/Sub holds them (data and every attribute), left there."""
        return self._pull(self._subscription(dead_letter=True), release=True)

    def dead_letter_reasons(self) -> list[str] | None:
        """Reasons on the dead-letter topic (Pub/Sub); None where the broker has none."""
        if self.kind != "pubsub":
            return None
        received = self._pull(self._subscription(dead_letter=True), release=False)
        return [m.message.attributes.get("dead_letter_reason", "") for m in received]


def configure_broker(
    kind: str, request: pytest.FixtureRequest, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> BrokerProbe:
    """Point BROKER_URL at ``kind`` (results always go to Redis); return its probe."""
    project = None
    if kind == "pubsub":
        project = request.getfixturevalue("pubsub_project")
        monkeypatch.setenv("BROKER_URL", f"pubsub://{project}")
    else:
        monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    return BrokerProbe(kind, redis_url, project)


def pubsub_sqlite_env(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, **settings: str,
) -> Iterator[ContentEnv]:
    """A content env over Pub/Sub (emulator) and SQLite, with ``settings`` as environment
    variables (which the workers started by the test inherit); the body of a fixture."""
    probe = configure_broker("pubsub", request, redis_url, monkeypatch)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'content.sqlite'}")
    monkeypatch.setenv("VIVIDLY_DATA_DIR", str(tmp_path / "data"))
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    services = ContentServices.from_settings(Settings())
    yield ContentEnv(probe, "sqlite", services)
    services.close()

