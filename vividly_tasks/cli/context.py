"""What every command needs, built once per invocation and only when asked for: the settings
(invalid ones exit ``RET_CONFIG``), the Celery app, the content services, Pub/Sub access."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from vividly_tasks.cli.errors import cli_error, config_error
from vividly_tasks.content.services import ContentServices
from vividly_tasks.product import create_app
from vividly_tasks.settings import Settings, environment_variable, secret_values
from vividly_tasks.transport.channel import Channel as PubSubChannel
from vividly_tasks.worker import tracing
from vividly_tasks.worker.logs import configure_process_logging


def describe_validation_error(exc: ValidationError) -> str:
    """``VAR: problem; ...`` naming the environment variables, as people set them."""
    return "; ".join(
        f"{environment_variable(str(error['loc'][0]))}: {error['msg']}"
        if error["loc"] and str(error["loc"][0]) in Settings.model_fields
        else error["msg"]
        for error in exc.errors()
    )


F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliContext:
    """Lazily built resources of one ``vividly`` invocation (``click`` passes it down).

    ``app_path`` (``-A``): the operator commands work on that Celery app (its broker, queues,
    exchanges and bindings) and never read the product's settings, so nothing of the product
    is configured, opened or written for it.
    """

    app_path: str | None = None

    @cached_property
    def settings(self) -> Settings:
        try:
            settings = Settings()
        except ValidationError as exc:
            raise config_error(f"invalid configuration: {describe_validation_error(exc)}") from None
        # Library warnings still reach people, as plain text: the CLI's own output is prose.
        configure_process_logging("text", "WARNING", secret_values(settings))
        if settings.uses_embedded_broker:
            # Kombu warns that filesystem:// names no host; it needs none.
            logging.getLogger("kombu.connection").setLevel(logging.ERROR)
        return settings

    @cached_property
    def app(self) -> Any:
        """The ``-A`` app, or the product's."""
        if self.app_path is None:
            app = create_app(self.settings)
            tracing.configure_if_requested(app)  # OTEL_TRACES_EXPORTER set: trace the submit
            return app
        from celery.app.utils import find_app  # noqa: PLC0415 - only for -A

        import vividly_tasks.transport  # noqa: F401, PLC0415 - registers pubsub://

        configure_process_logging("text", "WARNING", ())
        try:
            return find_app(self.app_path)
        except Exception as exc:  # an import error of theirs, or no app there
            raise config_error(f"cannot load the Celery app {self.app_path!r}: {exc!r}") from None

    @property
    def broker_url(self) -> str:
        if self.app_path is None:
            return self.settings.effective_broker_url
        return str(self.app.conf.broker_url or "")

    @cached_property
    def services(self) -> ContentServices:
        settings = self.settings
        try:
            return ContentServices.from_settings(settings)
        except Exception as exc:
            raise cli_error(exc) from exc

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
        if "services" in self.__dict__:
            self.services.close()
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
        help="Celery app (module or module:attr, as celery -A) [default: the product app].",
    )(command)

