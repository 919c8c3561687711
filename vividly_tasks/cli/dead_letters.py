"""``vividly dlq list|replay|purge``: a queue's dead-lettered messages, with their reasons and
delivery counts (``vividly_tasks.transport.dead_letter_box``).

Whoever may publish to a queue writes its dead letters' attributes and data, so every value
shown is escaped (``printable``): the JSON form escapes as JSON does, non-ASCII included."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from vividly_tasks.cli.context import CliContext, app_option, pass_context
from vividly_tasks.cli.errors import CliError, not_found
from vividly_tasks.cli.exit_codes import RET_USAGE
from vividly_tasks.transport.dead_letter_box import DeadLetter, DeadLetterBox
from vividly_tasks.worker.safe_text import printable

F = TypeVar("F", bound=Callable[..., Any])


def queue_option(command: F) -> F:
    command = click.option(
        "--queue", "-Q", default=None,
        help="Task queue [default: the app's default queue; VIVIDLY_QUEUE for the product]."
    )(command)
    return app_option(command)


@click.group()
def dlq() -> None:
    """Dead-lettered messages of a task queue: list, replay to the queue, purge."""


@dlq.command(name="list")
@queue_option
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show at most this many [default: all].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_context
def list_letters(context: CliContext, queue: str | None, limit: int | None,
                 as_json: bool) -> None:
    """List dead letters with reason, delivery count and task; leaves them in place."""
    with open_box(context, queue) as box, box.browse(limit) as letters:
        if as_json:
            for letter in letters:
                click.echo(json.dumps(letter.as_dict()))
            return
        click.echo(f"{len(letters)} dead letter(s) on {box.subscription}")
        for letter in letters:
            click.echo(describe(letter))


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter.")
@queue_option
@pass_context
def replay(context: CliContext, ids: tuple[str, ...], everything: bool,
           queue: str | None) -> None:
    """Publish dead letters back to their queue (by message, original or task id)."""
    check_selection(ids, everything)
    with open_box(context, queue) as box, box.browse() as letters:
        chosen = select(letters, ids, everything)
        box.replay(chosen)
        for letter in chosen:
            click.echo(f"replayed {printable(letter.message_id)} ({task_label(letter)}) to "
                       f"{box.replay_topic}")
        click.echo(f"replayed {len(chosen)} of {len(letters)} dead letter(s)")


@dlq.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Purge every dead letter.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@queue_option
@pass_context
def purge(context: CliContext, ids: tuple[str, ...], everything: bool, yes: bool,
          queue: str | None) -> None:
    """Delete dead letters for good (by message, original or task id, or --all)."""
    check_selection(ids, everything)
    with open_box(context, queue) as box, box.browse() as letters:
        chosen = select(letters, ids, everything)
        if chosen and not yes:
            click.confirm(f"Delete {len(chosen)} dead letter(s) for good?", abort=True)
        box.discard(chosen)
        click.echo(f"purged {len(chosen)} of {len(letters)} dead letter(s)")


@contextlib.contextmanager
def open_box(context: CliContext, queue_name: str | None) -> Iterator[DeadLetterBox]:
    with context.pubsub_channel() as channel:
        app = context.app
        queue = app.amqp.queues[queue_name or app.conf.task_default_queue]
        spec = channel.subscription_spec(queue.name, queue.exchange.name or queue.name)
        assert spec.dead_letter_subscription is not None
        replay_topic = channel.connection.provisioner.subscription_topic(spec.path)
        yield DeadLetterBox(channel.pubsub, subscription=spec.dead_letter_subscription,
                            replay_topic=replay_topic)


def check_selection(ids: tuple[str, ...], everything: bool) -> None:
    if everything == bool(ids):
        raise CliError("name dead letters by id, or give --all (not both)", RET_USAGE)


def select(letters: list[DeadLetter], ids: tuple[str, ...], everything: bool) -> list[DeadLetter]:
    """The letters named by ``ids`` (each must match), or all with ``--all``."""
    if everything:
        return letters
    unknown = [i for i in ids if not any(letter.matches(i) for letter in letters)]
    if unknown:
        raise not_found(f"no dead letter with id {', '.join(unknown)} "
                        f"({len(letters)} dead letter(s) on the queue)")
    return [letter for letter in letters if any(letter.matches(i) for i in ids)]


#: How much of a dead letter's data ``list`` shows.
PREVIEW_BYTES = 120


def task_label(letter: DeadLetter) -> str:
    if letter.task:
        return printable(f"{letter.task}[{letter.task_id}]")
    return "not a Celery task"


def preview(data: bytes) -> str:
    """The head of the data as text (undecodable bytes as ``\\xNN``), escaped."""
    head = data[:PREVIEW_BYTES].decode("utf-8", errors="backslashreplace")
    more = f" ... ({len(data)} bytes)" if len(data) > PREVIEW_BYTES else ""
    return printable(head) + more


def describe(letter: DeadLetter) -> str:
    info = letter.as_dict()
    deliveries = info["delivery_count"] if info["delivery_count"] is not None else "?"
    return (f"- {printable(letter.message_id)}  {task_label(letter)}  deliveries: {deliveries}  "
            f"dead-lettered: {printable(info['dead_lettered_at'])}\n"
            f"    reason: {printable(letter.reason)}\n"
            f"    data:   {preview(letter.data)}")
