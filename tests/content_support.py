"""Helpers shared by the content tests: broker and database parameters, waiting, ffprobe."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vividly_tasks.content.models import ContentRequest
from vividly_tasks.content.services import ContentServices

T = TypeVar("T")

#: Flip to True when vividly_tasks.transport (the Pub/Sub transport) has landed: that is the
#: only change needed to run every content worker test over Pub/Sub as well.
PUBSUB_TRANSPORT_LANDED = False

#: Workers of the content tests also load the fault-injecting storage.
WORKER_INCLUDE = ["--include", "tests.worker_tasks,tests.content_faults"]


def broker_params() -> list[Any]:
    """``redis`` and ``pubsub``; the latter skipped until the transport has landed."""
    pubsub_marks = [] if PUBSUB_TRANSPORT_LANDED else [
        pytest.mark.skip(reason="transport not landed")
    ]
    return [pytest.param("redis", id="redis"), pytest.param("pubsub", id="pubsub",
                                                            marks=pubsub_marks)]


ARTIFACTS_TEXT = {"lesson.md", "lesson.html", "manifest.json"}
ARTIFACTS_VIDEO = ARTIFACTS_TEXT | {"lesson.mp4"}

DATABASES = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql")]


@dataclass
class ContentEnv:
    """What a content worker test has: the test process's own view of database and storage."""

    broker: str
    database: str
    services: ContentServices

    def row(self, request_id: Any) -> ContentRequest:
        row = self.services.repository.get(request_id)
        assert row is not None, f"no row for {request_id}"
        return row


def wait_for(
    check: Callable[[], T | None], timeout: float, message: str, interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(interval)


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
