"""``vividly provision``: create or verify the Pub/Sub resources that the settings call for."""

from __future__ import annotations

from typing import Any

import click

from vividly_tasks.cli.context import CliContext, app_option, pass_context
from vividly_tasks.cli.errors import CliError
from vividly_tasks.cli.exit_codes import RET_NO_PERMISSION
from vividly_tasks.transport.channel import Channel as PubSubChannel
from vividly_tasks.transport.channel import listed
from vividly_tasks.transport.provisioning_plan import (
    Plan,
    Resource,
    Step,
    apply_plan,
    broadcast_topic,
    make_plan,
    queue_resources,
)
from vividly_tasks.worker.safe_text import printable


@click.command()
@app_option
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--verify", "--verify-only", "verify_only", is_flag=True,
              help="Only verify; the default when auto-creation is off (PUBSUB_AUTO_CREATE=false, "
                   "or the app's auto_create transport option).")
@click.option("--queue", "-Q", "queues", multiple=True,
              help="Task queues to provision, comma-separated as Celery takes them (repeatable) "
                   "[default: the queues the app's workers consume; for the product app "
                   "VIVIDLY_QUEUE and those of PUBSUB_PLAIN_MESSAGE_TASKS].")
@pass_context
def provision(context: CliContext, dry_run: bool, verify_only: bool,
              queues: tuple[str, ...]) -> None:
    """Create (or verify) topics, subscriptions, dead-letter topics and their policies, and
    the records of the queues' bindings: exactly what the app's workers declare.

    Idempotent: what exists as wanted is left alone, a subscription whose ack deadline,
    dead-letter or retry policy differs from the settings is updated. Verify-only (or
    auto-creation off) exits 77 if anything is missing or differs.
    """
    names = tuple(name for value in queues for name in listed(value))
    with context.pubsub_channel() as channel:
        verify_only = verify_only or not channel.auto_create
        plan = make_plan(channel.pubsub, planned_resources(context.app, channel, names))
        mode = "verify only" if verify_only else "dry run" if dry_run else "apply"
        click.echo(f"Pub/Sub project {channel.project}, prefix {channel.prefix!r} ({mode}):")
        for step in plan.steps:
            click.echo(describe_step(step, verify_only=verify_only))
        if verify_only:
            verify(plan)
        elif dry_run:
            click.echo(f"dry run: {len(plan.changes)} change(s) not applied")
        else:
            apply_plan(channel.pubsub, plan)
            click.echo(summary(plan))


def planned_resources(app: Any, channel: PubSubChannel,
                      queues: tuple[str, ...]) -> list[Resource]:
    """The task queues' resources and the topics of Celery's broadcast exchanges."""
    resources: list[Resource] = []
    for name in queues or tuple(app.amqp.queues):  # what workers consume, unless told -Q
        queue = app.amqp.queues[name]  # Celery's own declaration (created if unlisted)
        spec = channel.subscription_spec(queue.name, queue.exchange.name or queue.name)
        bindings = [(queue.exchange.type, queue.routing_key or "")] if queue.exchange.name \
            else []
        bindings += [(b.exchange.type, b.routing_key or "") for b in queue.bindings]
        resources += queue_resources(queue.name, spec, bindings)
    mailbox = app.control.mailbox
    for exchange, purpose in (
        (app.conf.event_exchange, "Celery events (Flower, celery events)"),
        (mailbox.exchange.name, "remote control (celery inspect, celery control)"),
        (mailbox.reply_exchange.name, "replies to remote control"),
    ):
        resources.append(broadcast_topic(channel.exchange_topic(exchange), purpose))
    return resources


#: How a step reads when provisioning may only verify.
VERIFY_WORDS = {"ok": "ok", "create": "missing", "update": "differs"}


def describe_step(step: Step, *, verify_only: bool) -> str:
    resource = step.resource
    action = VERIFY_WORDS[step.action] if verify_only else step.action
    line = f"  {action:<8}{resource.kind:<13}{resource.path}  ({resource.purpose})"
    # A difference quotes what the project holds now, which its other editors wrote.
    return "\n".join(printable(text) for text in
                     [line, *(f"{'':<23}{difference}" for difference in step.differences)])


def verify(plan: Plan) -> None:
    if not plan.changes:
        click.echo(f"verified: all {len(plan.steps)} resources exist as the settings say")
        return
    missing = [step.resource.path for step in plan.missing]
    differing = [step.resource.path for step in plan.changes if step.action == "update"]
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if differing:
        problems.append(f"policies differ: {', '.join(differing)}")
    raise CliError(
        f"verify-only provisioning (auto-creation off, or --verify) found "
        f"{'; '.join(problems)}. Run `vividly provision` as an identity allowed to create "
        "them (roles/pubsub.editor), or create them by hand.",
        RET_NO_PERMISSION,
    )


def summary(plan: Plan) -> str:
    counts = {action: sum(1 for s in plan.steps if s.action == action)
              for action in ("create", "update", "ok")}
    return (f"created {counts['create']}, updated {counts['update']}, "
            f"{counts['ok']} already as wanted")
