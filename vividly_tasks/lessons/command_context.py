"""What the lesson commands (``submit``, ``resubmit``, ``status``, ``demo``) need, built once
per invocation and only when asked for: the lesson settings (invalid ones exit ``RET_CONFIG``),
the lesson app and the content services; and their errors as the CLI's (``lesson_error``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import click

from vividly_tasks.cli.errors import CliError, cli_error, config_error, read_settings
from vividly_tasks.cli.exit_codes import RET_INVALID, RET_UNAVAILABLE
from vividly_tasks.lessons.errors import DatabaseUnavailable, EnqueueFailed, InvalidRequest
from vividly_tasks.lessons.product import VividlyCelery, create_app
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings, secret_values
from vividly_tasks.worker import tracing
from vividly_tasks.worker.logs import configure_process_logging

R = TypeVar("R")
CONTEXT_KEY = "vividly_tasks.lessons"


@dataclass
class LessonContext:
    """Lazily built resources of one lesson command (``click`` passes it down)."""

    @cached_property
    def settings(self) -> Settings:
        settings = read_settings(Settings)
        # Library warnings still reach people, as plain text: the CLI's own output is prose.
        configure_process_logging("text", "WARNING", secret_values(settings))
        if settings.uses_embedded_broker:
            # Kombu warns that filesystem:// names no host; it needs none.
            logging.getLogger("kombu.connection").setLevel(logging.ERROR)
        return settings

    @cached_property
    def app(self) -> VividlyCelery:
        app = create_app(self.settings)
        try:  # OTEL_TRACES_EXPORTER set: the submit is traced (docs/tracing.md)
            tracing.configure_if_requested(app)
        except ImportError as exc:  # the extra is missing, or the exporter named is
            raise config_error(f"tracing cannot start: {exc}") from None
        return app

    @cached_property
    def services(self) -> ContentServices:
        try:
            return ContentServices.from_settings(self.settings)
        except Exception as exc:
            raise lesson_error(exc) from exc

    def close(self) -> None:
        if "services" in self.__dict__:
            self.services.close()
        if "app" in self.__dict__:
            self.app.close()


def lesson_context() -> LessonContext:
    """This invocation's context, closed with it."""
    root = click.get_current_context().find_root()
    context: LessonContext | None = root.meta.get(CONTEXT_KEY)
    if context is None:
        context = root.meta[CONTEXT_KEY] = LessonContext()
        root.call_on_close(context.close)
    return context


def pass_lessons(command: Callable[..., R]) -> Callable[..., R]:
    """Pass the ``LessonContext`` as the command's first argument."""

    @functools.wraps(command)
    def with_context(*args: Any, **kwargs: Any) -> R:
        return command(lesson_context(), *args, **kwargs)

    return with_context


def lesson_error(exc: BaseException) -> CliError:
    """The CLI's error for a lesson error, else as ``cli_error`` says."""
    if isinstance(exc, CliError):
        return exc
    # A failed enqueue names the request it left pending; the cause decides the exit code.
    cause, context = exc, ""
    if isinstance(exc, EnqueueFailed) and exc.__cause__ is not None:
        cause = exc.__cause__
        context = (f"request {exc.request_id} is saved as pending but was not enqueued "
                   f"(send it again: vividly resubmit {exc.request_id}): ")
    if isinstance(cause, InvalidRequest):
        return CliError(f"invalid request: {cause.reason}", RET_INVALID)
    if isinstance(cause, DatabaseUnavailable):
        return CliError(f"{context}unavailable: {cause}", RET_UNAVAILABLE)
    error = cli_error(cause)
    return CliError(f"{context}{error.message}", error.exit_code)
