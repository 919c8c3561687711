"""Benchmark: a course of N text lessons (offline generator) through Pub/Sub and job workers.

    .venv/bin/python -m bench.course [--lessons 500] [--workers 2] [--concurrency 1]
        [--json bench/results/course.json]

Starts the Pub/Sub emulator and a Redis (results: the chord's native counting) on loopback, a
SQLite database and local storage in a temporary directory. Then:

- **submit**: what ``vividly course submit FILE`` does, timed in parts: read and validate the
  file, write the course and its requests (one transaction), publish the chord pipelined
  (``publish_in_flight``) until Pub/Sub confirmed every message, mark them ``queued``.
- **drain**: ``--workers`` ``vividly-worker job`` processes (``--concurrency`` each, started
  after the submit), from their start until the course's index is built; the jobs' own exits
  (idle) are not counted.
- **where the time goes**: the worker processes' capacity (drain wall x pool processes) split
  into the pipeline (each request's claim to its completion, from the rows: ``started_at`` to
  ``finished_at``), Celery's task wrapper around it (each task's runtime from the worker log,
  minus its pipeline), and the rest (receiving, acking, storing results and events, the
  chord's counting and callback, and the pool's idle moments between tasks).

Not a test: the figures depend on the machine; they are quoted in docs/content.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.services import start_pubsub_emulator, start_redis
from vividly_tasks import create_app
from vividly_tasks.lessons.course_tasks import publish
from vividly_tasks.lessons.courses import CourseRepository, read_course_file
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent

SUBJECTS = ("Mathematics", "Biology", "Physics", "History", "Geography")
TASK_RUNTIME = re.compile(
    r"Task vividly\.generate_content\[([0-9a-f-]{36})\] succeeded in ([0-9.e-]+)s")


def course_file(path: Path, lessons: int) -> Path:
    rows = ["topic,modality,grade,subject"]
    rows += [f"Topic number {n},text,{n % 12 + 1},{SUBJECTS[n % len(SUBJECTS)]}"
             for n in range(1, lessons + 1)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = Settings()
    services = ContentServices.from_settings(settings)
    app = create_app(settings)
    courses = CourseRepository(services.database)
    try:
        started = time.monotonic()
        lessons = read_course_file(course_file(workdir / "course.csv", args.lessons))
        parsed = time.monotonic()
        course, request_ids = courses.create(name="Bench", source="course.csv", lessons=lessons)
        created = time.monotonic()
        publication = publish(app, courses, course.id, request_ids, chord_id=str(course.id))
        published = time.monotonic()
        assert publication.pipelined and not publication.unsent, publication
        # Declaring the queue (creating topic and subscription) is part of the first publish.
        workers = []
        drain_started = time.monotonic()
        drain_started_wall = time.time()
        for number in range(args.workers):
            log = (workdir / f"job-{number}.log").open("wb")
            workers.append((subprocess.Popen(
                [sys.executable, "-m", "worker_entry", "job", "--concurrency",
                 str(args.concurrency), "--idle-timeout", "5", "--hostname",
                 f"job{number}@%h"],
                cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL), log))
        while True:
            row = courses.get(course.id)
            assert row is not None
            if row.indexed_at is not None:
                entries = courses.entries(course.id)
                if all(e.request.status in {"completed", "failed"} for e in entries):
                    break
            if time.monotonic() - drain_started > args.timeout:
                raise SystemExit(f"the course did not finish in {args.timeout} s")
            time.sleep(0.2)
        drained = time.monotonic()
        for process, log in workers:
            process.wait(timeout=120)
            log.close()
        single = one_at_a_time(settings, args.single) if args.single else None
    finally:
        app.close()
    entries = courses.entries(course.id)
    services.close()
    failed = [e for e in entries if e.request.status != "completed"]
    pipeline = [(e.request.finished_at - e.request.started_at).total_seconds()
                for e in entries if e.request.finished_at and e.request.started_at]
    runtimes: dict[str, float] = {}
    for number in range(args.workers):
        for match in TASK_RUNTIME.finditer((workdir / f"job-{number}.log").read_text()):
            runtimes[match.group(1)] = float(match.group(2))
    first_start = min(e.request.started_at for e in entries if e.request.started_at)
    last_finish = max(e.request.finished_at for e in entries if e.request.finished_at)
    drain = drained - drain_started
    capacity = drain * args.workers * args.concurrency
    pipeline_total = sum(pipeline)
    task_total = sum(runtimes.values())
    busy = (last_finish - first_start).total_seconds() * args.workers * args.concurrency
    return {
        "lessons": args.lessons, "workers": args.workers, "concurrency": args.concurrency,
        "failed": len(failed),
        "submit_seconds": round(published - started, 3),
        "submit_parts_seconds": {
            "read_and_validate": round(parsed - started, 3),
            "create_rows": round(created - parsed, 3),
            "publish_until_confirmed": round(publication.publish_seconds, 3),
            "mark_queued": round(published - created - publication.publish_seconds, 3),
        },
        "drain_seconds": round(drain, 2),
        "workers_start_to_first_claim_seconds": round(
            first_start.timestamp() - drain_started_wall, 2),
        "last_completion_to_index_seconds": round(
            (row.indexed_at - last_finish).total_seconds(), 2) if row.indexed_at else None,
        "first_claim_to_last_completion_seconds": round(
            (last_finish - first_start).total_seconds(), 2),
        "lessons_per_second": round(args.lessons / drain, 1),
        "pipeline_seconds_median": round(statistics.median(pipeline), 4),
        "task_seconds_median": round(statistics.median(runtimes.values()), 4),
        "capacity_seconds": round(capacity, 1),
        "pipeline_share": round(pipeline_total / capacity, 3),
        "task_wrapper_share": round((task_total - pipeline_total) / capacity, 3),
        "outside_tasks_share": round((capacity - task_total) / capacity, 3),
        "busy_window_capacity_seconds": round(busy, 1),
        "busy_window_pipeline_share": round(pipeline_total / busy, 3),
        "busy_window_task_wrapper_share": round((task_total - pipeline_total) / busy, 3),
        "busy_window_outside_tasks_share": round((busy - task_total) / busy, 3),
        "tasks_timed": len(runtimes),
        "one_at_a_time": single,
    }


def one_at_a_time(settings: Settings, count: int) -> dict[str, float]:
    """``count`` requests the way ``vividly submit`` sends one: row, confirmed publish, row
    update, each on its own (no worker runs: the messages stay queued)."""
    from vividly_tasks.lessons.tasks import submit_content_request  # noqa: PLC0415

    app = create_app(settings)
    try:
        submit_content_request(app, topic="Warm-up", modality="text")
        started = time.monotonic()
        for number in range(count):
            submit_content_request(app, topic=f"Single {number}", modality="text")
        seconds = time.monotonic() - started
    finally:
        app.close()
    return {"requests": count, "seconds": round(seconds, 3),
            "per_request_ms": round(1000 * seconds / count, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lessons", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--single", type=int, default=100,
                        help="then time this many single submits, for comparison (0: none)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vividly-bench-course-") as tmp:
        workdir = Path(tmp)
        redis = start_redis(workdir)
        emulator = start_pubsub_emulator(workdir)
        try:
            os.environ.update({
                "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{emulator.port}",
                "BROKER_URL": "pubsub://vividly-bench-course",
                "RESULT_BACKEND": f"redis://127.0.0.1:{redis.port}/0",
                "VIVIDLY_DATA_DIR": str(workdir / "data"), "LOG_FORMAT": "json",
                "CONTENT_GENERATOR": "offline",
            })
            for name in ("DATABASE_URL", "STORAGE_URL"):
                os.environ.pop(name, None)
            figures = run(args, workdir)
        finally:
            emulator.stop()
            redis.stop()
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    figures["cpus"] = os.cpu_count()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
