"""``vividly submit``, ``resubmit`` and ``status``: content requests, through the content domain's
own submit path (validated before anything is written) and its repository.

``status`` shows what producers and hosted services wrote (fields, an upstream's error text),
each value escaped (``printable``) so none can drive the terminal."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import click

from vividly_tasks.cli.errors import CliError, not_found
from vividly_tasks.cli.exit_codes import RET_FAILED, RET_INVALID
from vividly_tasks.lessons.command_context import LessonContext, lesson_error, pass_lessons
from vividly_tasks.lessons.models import ContentRequest, utcnow
from vividly_tasks.lessons.repository import parse_request_id
from vividly_tasks.lessons.requests import resubmit as resubmit_request
from vividly_tasks.lessons.status import Status, is_terminal
from vividly_tasks.lessons.tasks import send_generate_content, submit_content_request
from vividly_tasks.lessons.validation import Modality
from vividly_tasks.worker.redaction import mask_url_password
from vividly_tasks.worker.safe_text import printable

#: How often ``status`` re-reads a running request.
POLL_INTERVAL_SECONDS = 0.25


def request_id_argument(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A request id is a UUID: anything else is a usage error (exit 2) naming the value."""
    parsed = parse_request_id(value)
    if parsed is None:
        raise click.BadParameter(f"{value!r} is not a request id (a UUID)", ctx, param)
    return str(parsed)


@click.command()
@click.option("--topic", "-t", required=True, help="What the lesson is about.")
@click.option("--modality", "-m", required=True,
              type=click.Choice([m.value for m in Modality]), help="Text lesson or video.")
@click.option("--grade", "-g", "grade_level", default=None, help="Grade level: K or 1-12.")
@click.option("--subject", "-s", default=None, help="Subject, e.g. Biology.")
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON.")
@pass_lessons
def submit(context: LessonContext, topic: str, modality: str, grade_level: str | None,
           subject: str | None, as_json: bool) -> None:
    """Create a content request, enqueue its generation and print its id."""
    try:
        row = submit_content_request(
            context.app, topic=topic, modality=modality, subject=subject,
            grade_level=grade_level,
        )
    except Exception as exc:
        raise lesson_error(exc) from exc
    click.echo(json.dumps(row.as_dict()) if as_json else str(row.id))


@click.command()
@click.argument("request_id", callback=request_id_argument)
@pass_lessons
def resubmit(context: LessonContext, request_id: str) -> None:
    """Send a pending (enqueue failed) or queued request's message again; print its id."""
    try:
        row = resubmit_request(
            context.services.repository, functools.partial(send_generate_content, context.app),
            request_id,
        )
    except LookupError:
        raise not_found(f"unknown request id {request_id}") from None
    except ValueError as exc:
        raise CliError(str(exc), RET_INVALID) from None
    except Exception as exc:
        raise lesson_error(exc) from exc
    click.echo(str(row.id))


@click.command()
@click.argument("request_id", callback=request_id_argument)
@click.option("--json", "as_json", is_flag=True,
              help="Print the request as JSON once (with --wait: once it has finished).")
@click.option("--wait/--no-wait", default=None,
              help="Follow the request until it completes or fails [default: follow, with a "
                   "progress bar; --json: do not wait].")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Stop following after this many seconds (the request goes on).")
@pass_lessons
def status(context: LessonContext, request_id: str, as_json: bool, wait: bool | None,
           timeout: float | None) -> None:
    """Show a request: status, stage, progress, error and artifacts. Exit 1 if it failed."""
    row = read(context, request_id)
    if wait if wait is not None else not as_json:
        row = follow(context, row, timeout, show_bar=not as_json)
    if as_json:
        click.echo(json.dumps(row.as_dict(), indent=2))
    else:
        click.echo(describe(row))
    if row.status == Status.FAILED:
        click.get_current_context().exit(RET_FAILED)


def read(context: LessonContext, request_id: str) -> ContentRequest:
    try:
        row = context.services.repository.get(request_id)
    except Exception as exc:
        raise lesson_error(exc) from exc
    if row is None:
        database = mask_url_password(context.settings.effective_database_url)
        raise not_found(f"unknown request id {request_id} (database {database})")
    return row


def follow(context: LessonContext, row: ContentRequest, timeout: float | None, *,
           show_bar: bool) -> ContentRequest:
    """Re-read the request until it is terminal (or ``timeout``), with a bar on stderr."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if not in_progress(row):
        return row
    with click.progressbar(length=100, label=bar_label(row), file=sys.stderr,
                           show_eta=False, show_percent=True, hidden=not show_bar) as bar:
        shown = 0
        while True:
            progress = 100 if row.status == Status.COMPLETED else row.progress or 0
            bar.label = bar_label(row)
            if progress > shown:
                bar.update(progress - shown)
                shown = progress
            else:
                bar.render_progress()
            if not in_progress(row) or (deadline is not None and time.monotonic() > deadline):
                return row
            time.sleep(POLL_INTERVAL_SECONDS)
            row = read(context, str(row.id))


def in_progress(row: ContentRequest) -> bool:
    """Worth following: queued or generating, or pending while its submit is still sending (a
    pending request with an error is stuck until resubmitted)."""
    if is_terminal(row.status):
        return False
    return row.status != Status.PENDING or not row.error


def bar_label(row: ContentRequest) -> str:
    return printable(f"{row.status:<10} {row.stage or '':<8}")


def describe(row: ContentRequest) -> str:
    """The request for people: one block of ``name: value`` lines, artifacts as paths."""
    details = ", ".join(part for part in (row.subject, row.grade_level and
                                          f"grade {row.grade_level}") if part)
    lines = [
        f"request:       {row.id}",
        f"lesson:        {row.modality} on {row.topic!r}" + (f" ({details})" if details else ""),
        f"status:        {row.status}{status_detail(row)}",
        f"attempts:      {row.attempts}",
    ]
    if row.error:
        lines.append(f"{'reason:' if row.status == Status.RETRYING else 'error:':<15}{row.error}")
    if row.model_name:
        calls = row.model_calls or 0
        lines.append(f"model:         {row.model_name}, {row.prompt_tokens or 0} prompt + "
                     f"{row.output_tokens or 0} output tokens"
                     + (f" ({calls} call{'s' if calls != 1 else ''})" if calls else ""))
    if row.finished_at and row.started_at:
        seconds = (row.finished_at - row.started_at).total_seconds()
        lines.append(f"took:          {seconds:.1f} s (last attempt)")
    for name, uri in sorted((row.artifacts or {}).items()):
        lines.append(f"{name + ':':<15}{artifact_location(str(uri))}")
    # Each line escaped on its own: a value's line break shows as \n, never as a line.
    return "\n".join(map(printable, lines))


def status_detail(row: ContentRequest) -> str:
    """What a non-terminal status adds: the stage at work, or when a retry is due."""
    if row.status == Status.GENERATING:
        return f" (stage {row.stage}, {row.progress}%)"
    if row.status == Status.RETRYING:
        if row.retry_at is None:
            return " (retry due: not known)"
        seconds = (row.retry_at - utcnow()).total_seconds()
        when = f"in {seconds:.0f} s" if seconds >= 0 else f"overdue by {-seconds:.0f} s"
        return f" (retry due {row.retry_at.isoformat(timespec='seconds')}, {when})"
    return ""


def artifact_location(uri: str) -> str:
    """A local file's path (what people open), any other URI as it is."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return str(Path(unquote(parts.path)))
    return uri

