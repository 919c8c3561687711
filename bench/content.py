"""Benchmark: wall time and peak memory of content requests, end to end through a worker.

    .venv/bin/python -m bench.content [--text-runs 3] [--video-runs 1]
        [--output docs/benchmarks-content.md]

For each broker (the Pub/Sub emulator through our transport, and Redis), starts one Celery
worker (``--concurrency 1``, prefork) on SQLite and local storage in a temporary directory, with
results in a private Redis; sends one warm-up text request, then measures each request from
submit to ``completed`` in the database.
Memory is the peak of the summed resident set of the worker's whole process group (the worker,
its pool process, and espeak-ng/ffmpeg while they run), sampled every 20 ms.
Not a test: the figures depend on the machine; they are recorded in docs/benchmarks-content.md.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from harness.services import start_pubsub_emulator, start_redis
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.requests import submit
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.tasks import send_generate_content

REPO_ROOT = Path(__file__).resolve().parent.parent

SAMPLE_INTERVAL_SECONDS = 0.02
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class GroupMemorySampler:
    """Peak summed RSS (KiB) of every process in one process group, sampled in a thread."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def reset(self) -> None:
        self.peak_kib = 0

    def _rss_kib(self) -> int:
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                if int(fields[2]) == self.group:  # pgrp
                    total += int((entry / "statm").read_text().split()[1]) * PAGE_KIB
            except (OSError, ValueError, IndexError):
                continue  # the process ended while we looked
        return total

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_SECONDS):
            self.peak_kib = max(self.peak_kib, self._rss_kib())

    def __enter__(self) -> GroupMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measurement:
    modality: str
    wall_seconds: float
    peak_mib: float
    stages: dict[str, float] = field(default_factory=dict)
    video_seconds: float | None = None


def measure(
    services: ContentServices, app: object, worker: WorkerProcess, sampler: GroupMemorySampler,
    modality: str,
) -> Measurement:
    sampler.reset()
    started = time.monotonic()
    row = submit(
        services.repository, functools.partial(send_generate_content, app),
        topic="Photosynthesis", modality=modality, subject="Biology", grade_level="7",
    )
    while (current := services.repository.get(row.id)) is not None and current.status not in {
        "completed", "failed",
    }:
        time.sleep(0.01)
    wall = time.monotonic() - started
    assert current is not None
    if current.status != "completed":
        raise SystemExit(f"request {row.id} failed: {current.error}")
    video_seconds = None
    if modality == "video":
        manifest = json.loads(services.storage.get_bytes(f"{row.id}/manifest.json"))
        video_seconds = float(manifest["narration"]["seconds"])
    stages = stage_seconds(worker.logs(), str(row.id))
    return Measurement(modality, wall, sampler.peak_kib / 1024, stages, video_seconds)


def stage_seconds(log: str, request_id: str) -> dict[str, float]:
    """Each stage's duration, from the worker's JSON log (stage starts, then completion)."""
    marks: list[tuple[str, datetime]] = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("request_id") != request_id:
            continue
        if "stage" in record:
            marks.append((record["stage"], datetime.fromisoformat(record["time"])))
        elif record["message"].startswith(f"request {request_id} completed"):
            marks.append(("complete", datetime.fromisoformat(record["time"])))
    return {
        stage: (end - start).total_seconds()
        for (stage, start), (_, end) in itertools.pairwise(marks)
    }


@dataclass
class BrokerRun:
    broker: str
    text: list[Measurement]
    video: list[Measurement]
    idle_mib: float


def report(runs: list[BrokerRun]) -> str:
    lines = [
        "| broker | request | runs | wall time (median) | wall time (max) | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        for label, measurements in (
            ("text", run.text),
            (f"video, 5 sections, {run.video[0].video_seconds:.1f} s narrated", run.video),
        ):
            walls = [m.wall_seconds for m in measurements]
            lines.append(
                f"| {run.broker} | {label} | {len(measurements)} | "
                f"{statistics.median(walls):.2f} s | {max(walls):.2f} s | "
                f"{max(m.peak_mib for m in measurements):.0f} MiB |"
            )
    lines += ["", "Idle worker (main + one pool process): " + ", ".join(
        f"{run.broker} {run.idle_mib:.0f} MiB" for run in runs) + ".", ""]
    first = runs[0]
    lines += [
        f"Stages (first run of each, {first.broker}; from the worker's log):",
        "",
        "| stage | text | video |",
        "|---|---|---|",
        *(
            f"| {stage} | {_seconds(first.text[0].stages.get(stage))} | "
            f"{_seconds(first.video[0].stages.get(stage))} |"
            for stage in first.video[0].stages
        ),
    ]
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def run_broker(broker: str, workdir: Path, redis_url: str, args: argparse.Namespace) -> BrokerRun:
    """One worker on ``broker``: a warm-up, then the measured text and video requests."""
    data_dir = workdir / broker
    os.environ.update({
        "BROKER_URL": redis_url if broker == "redis" else "pubsub://vividly-bench",
        "RESULT_BACKEND": redis_url, "VIVIDLY_DATA_DIR": str(data_dir), "LOG_FORMAT": "json",
    })
    for name in ("DATABASE_URL", "STORAGE_URL"):
        os.environ.pop(name, None)
    settings = Settings()
    services = ContentServices.from_settings(settings)
    app = create_app(settings)
    worker = WorkerProcess.celery(
        dict(os.environ), workdir / f"worker-{broker}.log", concurrency=1
    ).start().wait_ready()
    try:
        with GroupMemorySampler(worker.pid) as sampler:
            measure(services, app, worker, sampler, "text")  # warm-up: imports, first connections
            time.sleep(0.5)
            sampler.reset()
            time.sleep(0.5)
            idle_mib = sampler.peak_kib / 1024
            run = functools.partial(measure, services, app, worker, sampler)
            text = [run("text") for _ in range(args.text_runs)]
            video = [run("video") for _ in range(args.video_runs)]
    finally:
        worker.stop()
        app.close()
        services.close()
    return BrokerRun(broker, text, video, idle_mib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text-runs", type=int, default=3)
    parser.add_argument("--video-runs", type=int, default=1)
    parser.add_argument("--brokers", default="pubsub,redis",
                        help="comma-separated: pubsub (the emulator), redis")
    parser.add_argument("--output", type=Path, help="Markdown file to write the figures into")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    runs: list[BrokerRun] = []
    with tempfile.TemporaryDirectory(prefix="vividly-bench-") as tmp:
        workdir = Path(tmp)
        services = [start_redis(workdir)]
        try:
            redis_url = f"redis://127.0.0.1:{services[0].port}/0"
            for broker in args.brokers.split(","):
                if broker == "pubsub":
                    emulator = start_pubsub_emulator(workdir)
                    services.append(emulator)
                    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{emulator.port}"
                runs.append(run_broker(broker, workdir, redis_url, args))
        finally:
            for service in services:
                service.stop()

    table = report(runs)
    print(table)
    if args.json:
        args.json.write_text(json.dumps([asdict(run) for run in runs], indent=2) + "\n")
    if args.output:
        write_doc(args.output, table)


def write_doc(path: Path, table: str) -> None:
    machine = f"{os.cpu_count()} vCPU {platform.machine()}, Python {platform.python_version()}"
    path.write_text(
        DOC_TEMPLATE.format(machine=machine, date=time.strftime("%Y-%m-%d"), table=table),
        encoding="utf-8",
    )


DOC_TEMPLATE = """# Content pipeline: benchmark

Wall time and peak memory of a text request and of a 5-section video request, end to end
through a real worker: submit (row + message) -> worker -> every stage -> `completed` in the
database. Produced by `bench/content.py`; rerun it to refresh this page:

```sh
.venv/bin/python -m bench.content --video-runs 3 --output docs/benchmarks-content.md
```

Setup: {machine}, measured {date}.
One Celery worker (`--concurrency 1`, prefork) per broker: the Pub/Sub emulator through
`vividly_tasks.transport`, and a private Redis. SQLite, local storage, the offline generator,
espeak-ng narration at 165 words a minute, ffmpeg (libx264 `veryfast`, `stillimage`, 12 fps,
AAC 96 kb/s). Memory is the peak summed resident set of the worker's process group (worker,
pool process, espeak-ng and ffmpeg while they run), sampled every 20 ms. A warm-up text request
runs first, so imports and first connections are not counted.

{table}

The machine is shared with other test runs, so a single figure can be off by a second or two;
the medians are the ones to compare. For comparison, the hand-written worker this product
replaces expected under 30 s for a text request and 2-5 minutes for a video. Encoding dominates
a video and grows with its narrated length; the slides are stills, so the frame rate is kept
low and the encoder tuned for them.
"""


if __name__ == "__main__":
    main()
