"""``vividly demo``: the main job end to end on whatever the settings say (embedded defaults
when nothing is set: SQLite, local files, Kombu's filesystem broker; no server).

It submits a few lesson requests (text and video) through the real submit path, runs
``vividly-worker job`` (the Cloud Run Job entrypoint) in its own process until the queue is
idle, and prints where each lesson and video is.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vividly_tasks.cli.errors import CliError
from vividly_tasks.cli.exit_codes import RET_FAILED
from vividly_tasks.lessons.command_context import LessonContext, lesson_error, pass_lessons
from vividly_tasks.lessons.commands import artifact_location
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status, is_terminal
from vividly_tasks.lessons.tasks import submit_content_request
from vividly_tasks.worker.redaction import mask_url_password
from vividly_tasks.worker.safe_text import printable

#: How often the demo looks at the requests while the job runs.
POLL_INTERVAL_SECONDS = 0.5
#: The job's idle timeout unless WORKER_IDLE_TIMEOUT is set: the demo's requests are all
#: queued before it starts, so it need not wait for late producers (the job's default: 10 s).
DEMO_IDLE_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class DemoRequest:
    topic: str
    modality: str
    subject: str
    grade_level: str


DEMO_REQUESTS = (
    DemoRequest("Photosynthesis", "text", "Biology", "7"),
    DemoRequest("Adding fractions", "text", "Mathematics", "4"),
    DemoRequest("The water cycle", "video", "Earth science", "5"),
)


@click.command()
@click.option("--video/--no-video", default=True, show_default=True,
              help="Include the video request (needs ffmpeg).")
@click.option("--idle-timeout", type=click.FloatRange(min=0.5), default=None,
              help="The job exits after this many idle seconds [default: WORKER_IDLE_TIMEOUT "
                   f"if set, else {DEMO_IDLE_TIMEOUT_SECONDS:g}].")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=2, show_default=True,
              help="Pool processes of the job.")
@pass_lessons
def demo(context: LessonContext, video: bool, idle_timeout: float | None,
         concurrency: int) -> None:
    """Submit demo requests, run the job until idle, print where the lessons are."""
    settings = context.settings
    if idle_timeout is None:
        idle_timeout = (settings.worker_idle_timeout if "worker_idle_timeout"
                        in settings.chosen() else DEMO_IDLE_TIMEOUT_SECONDS)
    click.echo(f"broker:   {mask_url_password(settings.effective_broker_url)}")
    click.echo(f"database: {mask_url_password(settings.effective_database_url)}")
    click.echo(f"storage:  {settings.effective_storage_url}")
    requests = [r for r in DEMO_REQUESTS if video or r.modality != "video"]
    ids: list[str] = []
    for request in requests:
        try:
            row = submit_content_request(
                context.app, topic=request.topic, modality=request.modality,
                subject=request.subject, grade_level=request.grade_level,
            )
        except Exception as exc:
            raise lesson_error(exc) from exc
        ids.append(str(row.id))
        click.echo(f"submitted {row.id}  {request.modality:<5}  {request.topic}")
    log_path = settings.resolved_data_dir / "demo-worker.log"
    ffmpeg_dir = packaged_ffmpeg_dir(settings.resolved_data_dir / "bin")
    narrator = demo_narrator(settings)
    click.echo(f"running: vividly-worker job --idle-timeout {idle_timeout:g} (log: {log_path})")
    exit_code, summary = run_job(context, ids, log_path, idle_timeout, concurrency, ffmpeg_dir,
                                 narrator)
    click.echo(f"job exited {exit_code} ({summary.get('exit_reason', 'no summary')}): "
               f"{summary.get('succeeded', 0)} succeeded, {summary.get('failed', 0)} failed "
               f"in {summary.get('runtime_seconds', '?')} s")
    incomplete = report(context, ids)
    if exit_code != 0 or incomplete:
        raise CliError(
            f"{len(incomplete)} request(s) did not complete; job exit code {exit_code}; "
            f"see {log_path}", RET_FAILED,
        )


def run_job(context: LessonContext, ids: list[str], log_path: Path, idle_timeout: float,
            concurrency: int, ffmpeg_dir: str | None,
            narrator: str | None = None) -> tuple[int, dict[str, Any]]:
    """``vividly-worker job`` in its own process; reports each request as it finishes."""
    command = [sys.executable, "-m", "worker_entry", "job", "--idle-timeout", f"{idle_timeout:g}",
               "--concurrency", str(concurrency)]
    env = {**os.environ, "LOG_FORMAT": "json"}  # the summary line is read back from the log
    if ffmpeg_dir:
        env["PATH"] = os.pathsep.join([ffmpeg_dir, env.get("PATH", "")])
    if narrator:
        env["CONTENT_NARRATOR"] = narrator
    pending = set(ids)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
        try:
            while process.poll() is None:
                pending -= announce_finished(context, pending)
                time.sleep(POLL_INTERVAL_SECONDS)
        except BaseException:
            process.terminate()  # Ctrl-C: the job stops as Cloud Run would stop it
            process.wait()
            raise
    announce_finished(context, pending)
    return process.returncode, summary_of(log_path)


def demo_narrator(settings: Settings) -> str | None:
    """The demo's explicit choice of silent narration where espeak-ng is missing (a worker
    never falls back to silence by itself); None: the configured narrator stands."""
    if "content_narrator" in settings.chosen() or settings.content_narrator != "espeak":
        return None
    if shutil.which(settings.content_tts_command):
        return None
    click.echo(f"narrator: silent ({settings.content_tts_command} is not installed; the demo "
               "chooses CONTENT_NARRATOR=silent, a worker never falls back to it)")
    return "silent"


def packaged_ffmpeg_dir(bin_dir: Path) -> str | None:
    """Without ffmpeg on PATH: a directory whose ``ffmpeg`` is imageio-ffmpeg's binary (the
    ``demo`` extra), so the job's video encoder finds one; None if there is ffmpeg or no such
    package (the video request then fails with the reason)."""
    if shutil.which("ffmpeg"):
        return None
    try:
        imageio_ffmpeg = importlib.import_module("imageio_ffmpeg")  # optional: the demo extra
    except ImportError:
        click.echo("note: ffmpeg is not installed, so the video will fail: install ffmpeg, "
                   "or the `demo` extra (pip install -e '.[demo]')", err=True)
        return None
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    link.unlink(missing_ok=True)
    link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    click.echo(f"ffmpeg:   {link} (packaged by imageio-ffmpeg)")
    return str(bin_dir)


def announce_finished(context: LessonContext, pending: set[str]) -> set[str]:
    finished = set()
    for request_id in sorted(pending):
        row = context.services.repository.get(request_id)
        if row is not None and is_terminal(row.status):
            finished.add(request_id)
            click.echo(f"  {row.status:<9} {request_id}  {row.modality:<5}  {row.topic}")
    return finished


def summary_of(log_path: Path) -> dict[str, Any]:
    """The job's one summary line (``worker_entry.summary``), or {} if it wrote none."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{") and '"worker_summary"' in line:
            try:
                record: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            return record
    return {}


def report(context: LessonContext, ids: list[str]) -> list[str]:
    """Print each request's artifacts; return the ids that did not complete."""
    incomplete = []
    click.echo("")
    for request_id in ids:
        row = context.services.repository.get(request_id)
        assert row is not None
        click.echo(f"{row.modality} lesson {row.topic!r} ({row.id}): {row.status}")
        if row.status != Status.COMPLETED:
            incomplete.append(request_id)
            if row.error:
                click.echo(f"  error: {printable(row.error)}")  # a hosted service's words
            continue
        for name in ("lesson.md", "lesson.html", "lesson.mp4"):
            uri = (row.artifacts or {}).get(name)
            if uri:
                click.echo(f"  {name:<12} {artifact_location(str(uri))}")
    return incomplete
