"""Courses end to end: ``vividly course submit FILE`` (30 text lessons and 2 videos), a real
worker, one index with every lesson in order; a lesson that fails for good is listed with its
reason and its resubmission updates the index. On the embedded defaults (the filesystem broker,
SQLite results: Celery's chord_unlock polls) and on Pub/Sub (the emulator, pipelined publishing;
Redis results: the native chord).

The failure: the artifact storage's first write fails (``harness.apps.content_faults``) and
``CONTENT_MAX_RETRIES=0`` makes it final, so exactly one lesson fails, whichever is first.
The offline generator and the silent narrator keep it quick.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import harness.apps.content_faults  # noqa: F401 - registers the flaky+file storage scheme
from harness.content import WORKER_INCLUDE, configure_broker
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.cli import cli
from vividly_tasks.cli.exit_codes import RET_FAILED, RET_OK
from vividly_tasks.lessons.course_index import index_key
from vividly_tasks.lessons.storage import LocalStorage

LESSONS = 32
VIDEO_POSITIONS = {10, 25}
FOLLOW_SECONDS = "180"


def course_lessons() -> list[dict[str, str]]:
    return [{"topic": f"Lesson {n:02d}: {'narrated ' if n in VIDEO_POSITIONS else ''}topic",
             "modality": "video" if n in VIDEO_POSITIONS else "text",
             "grade": str(n % 12 + 1), "subject": "Science"}
            for n in range(1, LESSONS + 1)]


def write_course_file(path: Path, kind: str) -> Path:
    lessons = course_lessons()
    if kind == "csv":
        rows = ["topic,modality,grade,subject",
                *(f"{x['topic']},{x['modality']},{x['grade']},{x['subject']}" for x in lessons)]
        path = path.with_suffix(".csv")
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    else:
        path = path.with_suffix(".jsonl")
        path.write_text("".join(json.dumps(x) + "\n" for x in lessons), encoding="utf-8")
    return path


@pytest.fixture(params=["embedded", "pubsub"])
def course_env(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The broker's name; storage fails its first write; no retries; quick videos."""
    if request.param == "pubsub":
        configure_broker("pubsub", request, request.getfixturevalue("redis_url"), monkeypatch)
    monkeypatch.setenv("STORAGE_URL", f"flaky+file://{tmp_path / 'artifacts'}?failures=1")
    monkeypatch.setenv("CONTENT_MAX_RETRIES", "0")
    monkeypatch.setenv("CONTENT_NARRATOR", "silent")
    monkeypatch.setenv("CONTENT_TTS_WORDS_PER_MINUTE", "450")
    yield request.param


def vividly(*args: str) -> tuple[int, str]:
    """Exit code and standard output (the error is raised, or shown on a wrong exit code)."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in {RET_OK, RET_FAILED}, result.stderr
    return result.exit_code, result.stdout


def index_rows(markdown: str) -> list[list[str]]:
    """The lessons table of an index.md: one list of cells per lesson."""
    rows = [line for line in markdown.splitlines() if re.match(r"^\| \d+ \|", line)]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def test_a_course_gives_one_index_in_order_lists_a_failure_and_a_resubmission_updates_it(
    course_env: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess],
) -> None:
    course_file = write_course_file(tmp_path / "unit-3", "jsonl" if course_env == "pubsub"
                                    else "csv")
    code, output = vividly("course", "submit", str(course_file), "--name", "Unit 3", "--json")
    assert code == RET_OK, output
    submitted = json.loads(output)
    course_id = submitted["id"]
    assert submitted["published"]["pipelined"] is (course_env == "pubsub")
    assert submitted["totals"]["lessons"] == LESSONS
    # Every request is queued (confirmed by the broker) before a worker runs.
    assert {lesson["status"] for lesson in submitted["lessons"]} == {"queued"}
    assert submitted["published"]["request_ids"] == [x["request_id"]
                                                     for x in submitted["lessons"]]

    start_worker(extra_args=WORKER_INCLUDE, concurrency=2).wait_ready()
    code, output = vividly("course", "status", course_id, "--wait", "--json", "--timeout",
                           FOLLOW_SECONDS)
    view = json.loads(output)
    assert code == RET_FAILED, output  # a lesson failed
    assert view["state"] == "completed with failures" and view["index_current"]
    assert [x["topic"] for x in view["lessons"]] == [x["topic"] for x in course_lessons()]
    failed = [x for x in view["lessons"] if x["status"] == "failed"]
    assert len(failed) == 1 and "injected storage failure" in failed[0]["error"]
    totals = view["totals"]
    assert (totals["lessons"], totals["completed"], totals["failed"], totals["at_work"]) == (
        LESSONS, LESSONS - 1, 1, 0)

    storage = LocalStorage(tmp_path / "artifacts")
    markdown = storage.get_bytes(index_key(course_id, "index.md")).decode()
    rows = index_rows(markdown)
    assert [int(row[0]) for row in rows] == list(range(1, LESSONS + 1))
    position = failed[0]["position"]
    assert rows[position - 1][3] == "failed"
    assert "## Failures" in markdown and "injected storage failure" in markdown
    for row, lesson in zip(rows, view["lessons"], strict=True):
        if lesson["status"] == "completed":
            assert f"../../{lesson['request_id']}/lesson.html" in row[1]
            assert (f"../../{lesson['request_id']}/lesson.mp4" in row[4]) is (
                lesson["modality"] == "video")
    html = storage.get_bytes(index_key(course_id, "index.html")).decode()
    assert html.count("<tr class=") == LESSONS and 'class="failed"' in html
    # The failed lesson ended in a state the chord accepts: a result, not a rejection.
    app = create_app()
    try:
        result = app.AsyncResult(failed[0]["request_id"]).get(timeout=10)
    finally:
        app.close()
    assert result["outcome"] == "failed" and result["course_id"] == course_id

    code, output = vividly("course", "resubmit", course_id, "--wait", "--json", "--timeout",
                           FOLLOW_SECONDS)
    assert code == RET_OK, output
    after = json.loads(output)
    assert after["state"] == "completed" and after["totals"]["completed"] == LESSONS
    again = after["lessons"][position - 1]
    assert again["status"] == "completed" and again["replaced"] == [failed[0]["request_id"]]
    assert [x["topic"] for x in after["lessons"]] == [x["topic"] for x in course_lessons()]
    markdown = storage.get_bytes(index_key(course_id, "index.md")).decode()
    rows = index_rows(markdown)
    assert len(rows) == LESSONS and {row[3].split()[0] for row in rows} == {"completed"}
    assert f"../../{again['request_id']}/lesson.html" in rows[position - 1][1]
    assert "## Failures" not in markdown
    assert f"- {LESSONS} lessons: {LESSONS} completed, 0 failed" in markdown
    videos = [row for row in rows if "mp4" in row[4]]
    assert len(videos) == len(VIDEO_POSITIONS)
