"""``vividly``: the operators' command line (submit, resubmit, status, course, provision, dlq,
demo, dispatch).

One small module per command group; each maps onto the domain's own API (content services,
the transport's provisioning) and converts errors into named exit codes
(``vividly_tasks.cli.exit_codes``) once, in ``vividly_tasks.cli.errors``.
"""

from __future__ import annotations

import click

from vividly_tasks.cli.context import CliContext
from vividly_tasks.cli.dead_letters import dlq
from vividly_tasks.cli.dispatch import dispatch
from vividly_tasks.cli.provision import provision
from vividly_tasks.lessons.commands import resubmit, status, submit
from vividly_tasks.lessons.course_commands import course
from vividly_tasks.lessons.demo import demo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Operate vividly-tasks: submit content requests, follow them, provision Pub/Sub,
    inspect and replay dead letters. Configuration comes from the environment (README)."""
    context = ctx.ensure_object(CliContext)
    ctx.call_on_close(context.close)


for command in (submit, resubmit, status, course, provision, dlq, demo, dispatch):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="vividly")
