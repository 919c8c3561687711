"""``vividly course submit|status|resubmit``: many lessons from one file, followed as one.

``submit FILE`` validates every line first (a bad file exits 65 naming each bad line, and
nothing is written), creates the course and its requests, publishes them as one chord
(pipelined over Pub/Sub) and prints the course id. ``status ID`` reads the rows: how many
lessons finished, failed or are at work, the totals, the failures with their reasons and where
the index is. ``--wait`` follows the course with a progress bar (stderr) until every lesson
has finished and the index shows it. A course with a failed lesson exits 1 (``status``, and
``submit``/``resubmit`` with ``--wait``), as ``vividly status`` does for a failed request.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from vividly_tasks.cli.errors import CliError, not_found
from vividly_tasks.cli.exit_codes import RET_FAILED, RET_INVALID
from vividly_tasks.lessons.command_context import LessonContext, lesson_error, pass_lessons
from vividly_tasks.lessons.commands import artifact_location
from vividly_tasks.lessons.course_index import totals_of
from vividly_tasks.lessons.course_tasks import Publication, resubmit_course, submit_course
from vividly_tasks.lessons.courses import (
    CourseEntry,
    CourseFileError,
    CourseRepository,
    all_finished,
    fingerprint,
    read_course_file,
)
from vividly_tasks.lessons.models import ContentRequest, Course
from vividly_tasks.lessons.repository import parse_request_id
from vividly_tasks.lessons.status import Status
from vividly_tasks.worker.safe_text import printable

#: How often ``--wait`` re-reads the course.
POLL_INTERVAL_SECONDS = 0.5


def course_id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if parse_request_id(value) is None:
        raise click.BadParameter(f"{value!r} is not a course id (a UUID)", ctx, param)
    return str(parse_request_id(value))


wait_option = click.option("--wait", is_flag=True,
                           help="Follow the course with a progress bar until every lesson "
                                "has finished and its index is built.")
timeout_option = click.option("--timeout", type=click.FloatRange(min=0), default=None,
                              help="With --wait: stop following after this many seconds.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def course() -> None:
    """Courses: many lessons from one CSV or JSON Lines file, one index."""


@course.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="The course's title [default: the file's name].")
@click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]), default=None,
              help="The file's format [default: from its extension, else its first line].")
@wait_option
@timeout_option
@json_option
@pass_lessons
def submit(context: LessonContext, file: Path, name: str | None, file_format: str | None,
           wait: bool, timeout: float | None, as_json: bool) -> None:
    """Create a course from FILE (lines of topic, modality, grade, subject) and print its id."""
    settings = context.settings
    try:
        lessons = read_course_file(file, max_topic_chars=settings.content_max_topic_chars,
                                   max_field_chars=settings.content_max_field_chars,
                                   file_format=file_format)
    except CourseFileError as exc:
        raise CliError(f"invalid course file, nothing created: {exc}", RET_INVALID) from None
    try:
        row, publication = submit_course(
            context.app, context.services, lessons, name=name or file.stem, source=file.name,
        )
    except Exception as exc:
        raise lesson_error(exc) from exc
    report_publication(publication)
    if not as_json:
        click.echo(str(row.id))
    finish(context, row.id, wait=wait, timeout=timeout, as_json=as_json, quiet=not as_json,
           published=publication)


@course.command("status")
@click.argument("course_id", callback=course_id_argument)
@wait_option
@timeout_option
@json_option
@pass_lessons
def status(context: LessonContext, course_id: str, wait: bool, timeout: float | None,
           as_json: bool) -> None:
    """Show a course: its lessons' progress, totals, failures and index. Exit 1 if a lesson
    failed."""
    finish(context, uuid.UUID(course_id), wait=wait, timeout=timeout, as_json=as_json)


@course.command("resubmit")
@click.argument("course_id", callback=course_id_argument)
@click.option("--position", "-p", "positions", type=click.IntRange(min=1), multiple=True,
              help="A lesson's position (repeatable) [default: every failed lesson].")
@wait_option
@timeout_option
@json_option
@pass_lessons
def resubmit(context: LessonContext, course_id: str, positions: tuple[int, ...], wait: bool,
             timeout: float | None, as_json: bool) -> None:
    """Generate a course's failed lessons again, as new requests; the index is rebuilt when
    they finish."""
    parsed = uuid.UUID(course_id)
    read_course(context, parsed)
    try:
        publication = resubmit_course(context.app, context.services, parsed,
                                      list(positions) or None)
    except LookupError as exc:
        raise not_found(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc), RET_INVALID) from None
    except Exception as exc:
        raise lesson_error(exc) from exc
    if publication is None:
        click.echo("no failed lessons to resubmit", err=True)
    else:
        report_publication(publication)
        if not as_json:
            click.echo("\n".join(publication.request_ids))
    finish(context, parsed, wait=wait, timeout=timeout, as_json=as_json, quiet=not as_json,
           published=publication)


def report_publication(publication: Publication) -> None:
    if publication.unsent:
        raise CliError(
            f"{len(publication.unsent)} of {len(publication.request_ids)} lesson(s) of course "
            f"{publication.course_id} were created but not enqueued ({publication.error}); "
            f"send them again: vividly course resubmit {publication.course_id}", RET_FAILED)


def read_course(context: LessonContext, course_id: uuid.UUID) -> Course:
    try:
        row = CourseRepository(context.services.database).get(course_id)
    except Exception as exc:
        raise lesson_error(exc) from exc
    if row is None:
        raise not_found(f"unknown course {course_id}")
    return row


def finish(context: LessonContext, course_id: uuid.UUID, *, wait: bool, timeout: float | None,
           as_json: bool, quiet: bool = False, published: Publication | None = None) -> None:
    """Follow (``wait``) and show the course (unless ``quiet`` and not waiting); exit 1 when
    a lesson failed and the course was shown. JSON adds what was just ``published``."""
    if not wait and quiet:
        return
    view = follow(context, course_id, timeout, show_bar=not as_json) if wait \
        else CourseView.read(context, course_id)
    if as_json:
        shown = view.as_dict()
        if published is not None:
            shown["published"] = {
                "request_ids": published.request_ids, "chord_id": published.chord_id,
                "build_task_id": published.build_task_id, "pipelined": published.pipelined,
                "publish_seconds": round(published.publish_seconds, 3),
            }
        click.echo(json.dumps(shown, indent=2))
    else:
        click.echo(view.describe())
    if view.failed:
        click.get_current_context().exit(RET_FAILED)


class CourseView:
    """A course as its rows say now."""

    def __init__(self, course: Course, entries: list[CourseEntry],
                 replaced: list[ContentRequest]) -> None:
        self.course = course
        self.entries = entries
        self.totals = totals_of(entries, replaced)
        self.finished = all_finished(entries)
        self.index_current = course.index_fingerprint == fingerprint(entries)

    @classmethod
    def read(cls, context: LessonContext, course_id: uuid.UUID) -> CourseView:
        course = read_course(context, course_id)
        courses = CourseRepository(context.services.database)
        try:
            entries = courses.entries(course_id)
            replaced = [request for request in (context.services.repository.get(item[
                "request_id"]) for entry in entries for item in entry.lesson.replaced or [])
                if request is not None]
        except Exception as exc:
            raise lesson_error(exc) from exc
        return cls(course, entries, replaced)

    @property
    def failed(self) -> list[CourseEntry]:
        return [entry for entry in self.entries if entry.request.status == Status.FAILED]

    @property
    def done(self) -> bool:
        """Every lesson finished and the index shows it."""
        return self.finished and self.index_current

    @property
    def state(self) -> str:
        if not self.finished:
            return "generating"
        if not self.index_current:
            return "indexing"
        return "completed with failures" if self.failed else "completed"

    def as_dict(self) -> dict[str, Any]:
        course = self.course
        return {
            "id": str(course.id), "name": course.name, "source": course.source,
            "state": self.state, "created_at": course.created_at.isoformat(),
            "chord_id": course.chord_id, "build_task_id": course.build_task_id,
            "index": course.index_artifacts or {}, "index_current": self.index_current,
            "indexed_at": course.indexed_at.isoformat() if course.indexed_at else None,
            "totals": self.totals.as_dict(),
            "lessons": [{
                "position": entry.position, "request_id": str(entry.request.id),
                "topic": entry.request.topic, "modality": entry.request.modality,
                "status": entry.request.status, "error": entry.request.error,
                "replaced": [item["request_id"] for item in entry.lesson.replaced or []],
            } for entry in self.entries],
        }

    def describe(self) -> str:
        course, totals = self.course, self.totals
        at_work = {status: sum(1 for e in self.entries if e.request.status == status)
                   for status in (Status.PENDING, Status.QUEUED, Status.GENERATING,
                                  Status.RETRYING)}
        working = ", ".join(f"{count} {status}" for status, count in at_work.items() if count)
        lines = [
            f"course:        {course.id}",
            f"name:          {course.name}" + (f" (from {course.source})" if course.source
                                                 else ""),
            f"state:         {self.state}",
            f"lessons:       {totals.lessons}: {totals.completed} completed, {totals.failed} "
            f"failed, {totals.at_work} at work" + (f" ({working})" if working else ""),
            f"video:         {totals.videos} video{'s' if totals.videos != 1 else ''}, "
            f"{totals.video_minutes:.1f} minutes",
            f"model:         {totals.prompt_tokens} prompt + {totals.output_tokens} output "
            f"tokens, ${totals.cost_usd:.4f}",
        ]
        for name, uri in sorted((course.index_artifacts or {}).items()):
            lines.append(f"{name + ':':<15}{artifact_location(str(uri))}"
                         + ("" if self.index_current else " (being rebuilt)"))
        if course.chord_id:
            lines.append(f"chord:         {course.chord_id} (callback vividly.build_course"
                         f"[{course.build_task_id}])")
        for entry in self.failed:
            lines.append(f"failed:        lesson {entry.position} ({entry.request.topic}, "
                         f"request {entry.request.id}): {entry.request.error}")
        return "\n".join(map(printable, lines))


def follow(context: LessonContext, course_id: uuid.UUID, timeout: float | None, *,
           show_bar: bool) -> CourseView:
    """Re-read the course until every lesson finished and the index shows it (or
    ``timeout``), with a bar of finished lessons on stderr."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = CourseView.read(context, course_id)
    with click.progressbar(length=view.totals.lessons, label="lessons", file=sys.stderr,
                           show_eta=False, show_pos=True, hidden=not show_bar) as bar:
        shown = 0
        while True:
            finished = view.totals.completed + view.totals.failed
            bar.label = printable(f"{view.state:<11} {view.totals.failed} failed")
            if finished > shown:
                bar.update(finished - shown)
                shown = finished
            else:
                bar.render_progress()
            if view.done or (deadline is not None and time.monotonic() > deadline):
                return view
            time.sleep(POLL_INTERVAL_SECONDS)
            view = CourseView.read(context, course_id)
