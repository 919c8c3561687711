"""What the operator commands need, built once per invocation and only when asked for: the
Celery app (``-A``, or the lesson app by default) and Pub/Sub access through its broker URL."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import click

from vividly_tasks.cli.errors import cli_error, config_error
from vividly_tasks.transport.channel import Channel as PubSubChannel
from vividly_tasks.worker.logs import configure_process_logging

F = TypeVar("F", bound=Callable[..., Any])
#: The app of a command run without ``-A``: the lesson workload's (the lessons extra).
DEFAULT_APP = "vividly_tasks"


@dataclass
class CliContext:
    """Lazily built resources of one ``vividly`` invocation (``click`` passes it down).

    ``app_path`` (``-A``): the operator commands work on that Celery app (its broker, queues,
    exchanges and bindings), on its own configuration, so nothing else is configured, opened
    or written for it.
    """

    app_path: str | None = None

    @cached_property
    def app(self) -> Any:
        """The ``-A`` app, or the lesson app."""
        from celery.app.utils import find_app  # noqa: PLC0415 - only when a command needs it

        import vividly_tasks  # noqa: PLC0415
        import vividly_tasks.transport  # noqa: PLC0415 - registers pubsub://

        # Library warnings still reach people, as plain text: the CLI's own output is prose.
        configure_process_logging("text", "WARNING", ())
        path = self.app_path or DEFAULT_APP
        try:
            # The lesson app is built for this command (``vividly_tasks.app`` is built once
            # per process, and a test runs many commands in one).
            app = find_app(path) if self.app_path else vividly_tasks.create_app()
            # Its settings are read now, so a bad one is this command's error, said once.
            app.conf.broker_url  # noqa: B018
        except click.ClickException:
            raise
        except Exception as exc:  # an import error of theirs, bad settings, or no app there
            raise config_error(f"cannot load the Celery app {path!r}: {exc}") from None
        return app

    @property
    def broker_url(self) -> str:
        return str(self.app.conf.broker_url or "")

    @contextlib.contextmanager
    def pubsub_channel(self) -> Iterator[PubSubChannel]:
        """A channel of the Pub/Sub transport on the configured broker (provision, dlq)."""
        url = self.broker_url
        if not url.startswith("pubsub://"):
            setting = "BROKER_URL" if self.app_path is None else "broker_url"
            where = "" if self.app_path is None else f" of {self.app_path}"
            raise config_error(
                f"{setting}{where} is {url!r}: this command manages Google Cloud Pub/Sub "
                f"resources; set {setting}=pubsub://PROJECT"
            )
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                channel = connection.default_channel
                assert isinstance(channel, PubSubChannel)
                yield channel
        except click.ClickException:
            raise
        except Exception as exc:
            raise cli_error(exc) from exc

    def close(self) -> None:
        if "app" in self.__dict__:
            self.app.close()


pass_context = click.make_pass_decorator(CliContext, ensure=True)


def app_option(command: F) -> F:
    """``-A APP``, as ``celery -A`` takes it: the command works on that Celery app."""

    def remember(ctx: click.Context, _: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.ensure_object(CliContext).app_path = value
        return value

    return click.option(
        "--app", "-A", default=None, expose_value=False, is_eager=True, callback=remember,
        help="Celery app (module or module:attr, as celery -A) [default: the lesson app].",
    )(command)

