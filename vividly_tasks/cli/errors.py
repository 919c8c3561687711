"""One error type for every command: a message for people and the exit code that says why.

Library and domain errors are converted here, once (``cli_error``), so the commands only raise.
Their text may quote a server's answer: it is shown escaped (``printable``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from google.auth.exceptions import DefaultCredentialsError
from kombu.exceptions import OperationalError

from vividly_tasks.cli.exit_codes import (
    RET_CONFIG,
    RET_FAILED,
    RET_NO_PERMISSION,
    RET_NOT_FOUND,
    RET_UNAVAILABLE,
)
from vividly_tasks.settings import SettingsError
from vividly_tasks.transport.errors import (
    PermissionDenied,
    PubSubChannelError,
    PubSubConnectionError,
    ResourceNotFound,
)
from vividly_tasks.worker.safe_text import printable

S = TypeVar("S")


class CliError(click.ClickException):
    """Printed as ``Error: <message>`` on stderr; the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = RET_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click's default is a class attribute

    def format_message(self) -> str:
        return printable(self.message)


#: Kinds of error in the order they are checked (subclasses first), with the exit code and
#: what the message says before the error's own text.
ERROR_KINDS: tuple[tuple[tuple[type[BaseException], ...], int, str], ...] = (
    ((DefaultCredentialsError,), RET_CONFIG,
     "no Google Cloud credentials (for the emulator, set PUBSUB_EMULATOR_HOST): "),
    ((PermissionDenied, ResourceNotFound), RET_NO_PERMISSION, ""),
    ((PubSubChannelError,), RET_FAILED, ""),
    ((PubSubConnectionError, ConnectionError, OperationalError), RET_UNAVAILABLE, "unavailable: "),
)


def cli_error(exc: BaseException) -> CliError:
    """The CLI's error for a transport or connection error (ours pass as they are)."""
    if isinstance(exc, CliError):
        return exc
    for kinds, code, label in ERROR_KINDS:
        if isinstance(exc, kinds):
            return CliError(f"{label}{exc}", code)
    return CliError(f"{type(exc).__name__}: {exc}", RET_FAILED)


def not_found(what: str) -> CliError:
    return CliError(what, RET_NOT_FOUND)


def config_error(what: str) -> CliError:
    return CliError(what, RET_CONFIG)


def read_settings(read: Callable[[], S]) -> S:
    """Settings read from the environment; an invalid value exits ``RET_CONFIG`` naming it."""
    try:
        return read()
    except SettingsError as exc:
        raise config_error(str(exc)) from None
