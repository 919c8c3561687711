"""``vividly``: the operators' command line.

The adapter's commands (``provision``, ``dlq``, ``dispatch``) and those of installed
workloads (the lesson workload's ``submit``, ``resubmit``, ``status``, ``course``, ``demo``)
are found by their entry points (group ``vividly_tasks.commands``) and imported only when run
or listed, so the adapter imports nothing of a workload and a command whose extra is missing
says which to install. Errors become named exit codes (``vividly_tasks.cli.exit_codes``) once, in
``vividly_tasks.cli.errors``.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from vividly_tasks.cli.context import CliContext
from vividly_tasks.cli.errors import config_error

ENTRY_POINT_GROUP = "vividly_tasks.commands"


def commands() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def missing_extra(name: str, entry: EntryPoint, exc: ImportError) -> click.Command:
    """A stand-in for a command whose extra is not installed: it says which to install."""
    extra = ",".join(entry.extras) or "?"
    message = (f"vividly {name} needs the {extra} extra: pip install 'vividly-tasks[{extra}]' "
               f"({exc})")

    @click.command(name, help=f"(needs the {extra} extra)",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unavailable() -> None:
        raise config_error(message)

    return unavailable


class CommandsFromEntryPoints(click.Group):
    """A group whose commands are loaded from their entry points on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        entry = commands().get(name)
        if command is not None or entry is None:
            return command
        try:
            loaded: Any = entry.load()
        except ImportError as exc:
            loaded = missing_extra(name, entry, exc)
        self.add_command(loaded, name)
        return loaded  # type: ignore[no-any-return]


@click.group(cls=CommandsFromEntryPoints, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Operate vividly-tasks: provision Pub/Sub, inspect and replay dead letters, dispatch job
    executions; with the lessons extra, submit lesson requests and follow them.
    Configuration comes from the environment (docs/configuration.md)."""
    context = ctx.ensure_object(CliContext)
    ctx.call_on_close(context.close)


def main() -> None:
    cli(prog_name="vividly")
