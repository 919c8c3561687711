"""Settings from the environment: how every part of vividly-tasks reads its own.

Each part declares its settings once, as fields of a frozen dataclass, in the module of the
code that owns them: the transport's environment options here (``PubSubSettings``), logging
here (``LogSettings``), the entrypoint's in ``worker_entry.settings``, the dispatcher's in
``vividly_tasks.dispatch.settings``, the lesson workload's in ``vividly_tasks.lessons.settings``.
A process that needs several parts reads a class that inherits them: a field is declared in one
place and read wherever it is needed.

A field's environment variable is its name in upper case unless ``env=`` says otherwise. An
instance reads the environment when it is made (``WorkerSettings()``); keyword arguments, by
field or variable name, override it (``WorkerSettings(worker_idle_timeout=2)``). Values are
converted and checked by click's parameter types, the same that check the commands' flags, and
every bad value is named in one ``SettingsError``. An empty variable means unset: compose files
and deploy scripts pass ``NAME=`` for "not set".

Why not pydantic-settings: it brings six packages to a slim install that otherwise adds three to
``celery`` plus ``kombu[gcpubsub]``; click already comes with Celery and checks values as well.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import click

from vividly_tasks.transport import defaults
from vividly_tasks.worker.logs import LogFormat
from vividly_tasks.worker.redaction import MASK, mask_url_password, url_secrets


class SettingsError(ValueError):
    """Bad values in the environment or overrides; each problem names its variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


@dataclasses.dataclass(frozen=True)
class Secret:
    """A value that never shows: ``str()`` and ``repr()`` are masked."""

    value: str = dataclasses.field(repr=False)

    def get_secret_value(self) -> str:
        return self.value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"


#: A setting's kind: any click parameter type (``click.INT``, ``click.IntRange(1, 10)``...).
Kind = click.ParamType[Any, Any]


class _SecretType(click.ParamType[Secret, Any]):
    name = "secret"

    def convert(self, value: Any, param: Any, ctx: Any) -> Secret:
        return value if isinstance(value, Secret) else Secret(str(value))


class _PathType(click.ParamType[Path, Any]):
    name = "path"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path:
        return Path(value)


class _QueueTasksType(click.ParamType[tuple[tuple[str, str], ...], Any]):
    """A JSON object queue -> task name, held as pairs (settings are hashable)."""

    name = "JSON object"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[tuple[str, str], ...]:
        if isinstance(value, tuple):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                self.fail(f"not JSON: {exc}")
        if not isinstance(value, dict):
            self.fail("expected a JSON object mapping queue names to task names")
        empty = [f"{queue!r} -> {task!r}" for queue, task in value.items()
                 if not str(queue).strip() or not str(task).strip()]
        if empty:
            self.fail(f"queue and task names must not be empty: {', '.join(empty)}")
        return tuple((str(queue), str(task)) for queue, task in value.items())


SECRET = _SecretType()
PATH = _PathType()
QUEUE_TASKS = _QueueTasksType()
#: bool before int: a bool is an int.
_KINDS: dict[type, Kind] = {
    bool: click.BOOL, int: click.INT, float: click.FLOAT, str: click.STRING, Path: PATH,
}


def setting(default: Any, help: str, *, kind: Kind | None = None,
            env: str | None = None) -> Any:
    """Declare one setting: its default, what it does, how its text converts (click's
    parameter types; from the default's type if not given) and its variable (name upper-case
    unless given)."""
    if kind is None:
        if default is None:
            raise TypeError("a setting without a default needs its kind")
        kind = next(kind for base, kind in _KINDS.items() if isinstance(default, base))
    return dataclasses.field(default=default,
                             metadata={"help": help, "kind": kind, "env": env})


def choice(kind: Any) -> Kind:
    """click's Choice of a ``Literal`` type's values."""
    return click.Choice(list(get_args(kind)))


class EnvSettings:
    """Base of every settings class: made from the environment, frozen, hashable."""

    def __init__(self, _environ: Mapping[str, str] | None = None, **overrides: Any) -> None:
        environ = os.environ if _environ is None else _environ
        by_variable = {variable(field): field.name for field in settings_fields(type(self))}
        unknown = [key for key in overrides
                   if key not in by_variable.values() and key not in by_variable]
        if unknown:
            raise TypeError(f"{type(self).__name__} has no setting {', '.join(unknown)}")
        given = {by_variable.get(key, key): value for key, value in overrides.items()}
        problems = []
        chosen = set()
        for field in settings_fields(type(self)):
            raw = given.get(field.name)
            if raw is None:
                raw = environ.get(variable(field))
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                value = field.default
            else:
                chosen.add(field.name)
                try:
                    value = field.metadata["kind"].convert(raw, None, None)
                except click.BadParameter as exc:
                    problems.append(f"{variable(field)}: {exc.message}")
                    continue
            object.__setattr__(self, field.name, value)
        if problems:
            raise SettingsError(problems)
        object.__setattr__(self, "_chosen", frozenset(chosen))

    def chosen(self) -> frozenset[str]:
        """The fields set by the environment or an override, not left to their default."""
        chosen: frozenset[str] = getattr(self, "_chosen")  # noqa: B009 - set in __init__
        return chosen


def settings_fields(cls: type) -> Iterator[dataclasses.Field[Any]]:
    """Every setting of a settings class, its own and those it inherits."""
    return (field for field in dataclasses.fields(cls) if "kind" in field.metadata)


def variable(field: dataclasses.Field[Any]) -> str:
    return field.metadata["env"] or field.name.upper()


def variables(cls: type) -> list[str]:
    """The environment variables a settings class reads."""
    return [variable(field) for field in settings_fields(cls)]


def redacted(settings: EnvSettings) -> dict[str, Any]:
    """Every setting, secrets and URL passwords masked: safe to print or log."""
    values: dict[str, Any] = {}
    for field in settings_fields(type(settings)):
        value = getattr(settings, field.name)
        if isinstance(value, Secret):
            value = MASK
        values[field.name] = str(value) if isinstance(value, Path) else value
    return {key: mask_url_password(value) for key, value in values.items()}


def secret_values(settings: EnvSettings) -> list[str]:
    """Every secret these settings hold, to be masked wherever text leaves a process
    (``vividly_tasks.worker.redaction``): each ``Secret`` (and the password of a
    ``user:password`` one), and the password and secret query values of each URL."""
    values: list[str] = []
    for field in settings_fields(type(settings)):
        value = getattr(settings, field.name)
        if isinstance(value, Secret):
            secret = value.get_secret_value()
            values += [secret, secret.partition(":")[2]]
        else:
            values += url_secrets(value)
    return [value for value in values if value]


@dataclasses.dataclass(frozen=True, init=False)
class LogSettings(EnvSettings):
    """How a process logs (every command of the adapter and the workload)."""

    log_level: str = setting("INFO", "Root log level.")
    log_format: LogFormat = setting(
        "json", "json: one object a line with severity; text: for humans.",
        kind=choice(LogFormat))


@dataclasses.dataclass(frozen=True, init=False)
class PubSubSettings(EnvSettings):
    """The Pub/Sub transport's options as an app reads them from the environment (the
    transport itself reads none: ``transport_options()`` hands them over). The defaults are
    the transport's own (``vividly_tasks.transport.defaults``)."""

    pubsub_emulator_host: str | None = setting(
        None, "Read by Google's clients; set to use the emulator.", kind=click.STRING)
    pubsub_prefix: str = setting(
        defaults.PREFIX, "Prefix of every topic and subscription name.")
    pubsub_auto_create: bool = setting(
        defaults.AUTO_CREATE,
        "Create topics/subscriptions on declare; false only verifies they exist.")
    pubsub_ack_deadline_seconds: int = setting(
        defaults.ACK_DEADLINE_SECONDS, "Ack deadline of created subscriptions.",
        kind=click.IntRange(10, 600))
    pubsub_max_lease_seconds: int = setting(
        defaults.MAX_LEASE_SECONDS,
        "How long a received, unacked message keeps its lease by extension.",
        kind=click.IntRange(min=10))
    pubsub_max_delivery_attempts: int = setting(
        defaults.MAX_DELIVERY_ATTEMPTS, "Delivery attempts before Pub/Sub dead-letters.",
        kind=click.IntRange(5, 100))
    pubsub_pull_ahead: int = setting(
        defaults.PULL_AHEAD,
        "Messages per prefetch slot a worker may hold ahead while a backlog exists, hiding a "
        "Pull's round trip; each starts within about a second or goes back. 0: off.",
        kind=click.IntRange(min=0))
    pubsub_plain_message_tasks: tuple[tuple[str, str], ...] = setting(
        (), "JSON object queue -> task: each plain (non-Celery) message on the queue runs the "
        "task with the message's JSON object as keyword arguments (see docs/wire-format.md).",
        kind=QUEUE_TASKS)

    @property
    def plain_message_tasks(self) -> dict[str, str]:
        """Queue name -> the task its plain messages run (PUBSUB_PLAIN_MESSAGE_TASKS)."""
        return dict(self.pubsub_plain_message_tasks)

    def transport_options(self) -> dict[str, Any]:
        """The options of ``broker_transport_options``, keyed as the transport reads them."""
        return {
            "prefix": self.pubsub_prefix,
            "auto_create": self.pubsub_auto_create,
            "ack_deadline_seconds": self.pubsub_ack_deadline_seconds,
            "max_lease_seconds": self.pubsub_max_lease_seconds,
            "max_delivery_attempts": self.pubsub_max_delivery_attempts,
            "plain_message_tasks": self.plain_message_tasks,
            "pull_ahead": self.pubsub_pull_ahead,
        }


@dataclasses.dataclass(frozen=True, init=False)
class DeploymentSettings(EnvSettings):
    """What the processes of one deployment share: where their files live, the broker and its
    default queue, the Google Cloud project and the database. Unset, everything runs on one
    machine with no server: Kombu's filesystem broker and SQLite under ``VIVIDLY_DATA_DIR``."""

    data_dir: Path = setting(
        Path(".vividly"),
        "Directory for the embedded defaults (SQLite files, artifacts, broker).",
        env="VIVIDLY_DATA_DIR")
    broker_url: str | None = setting(
        None, "pubsub://PROJECT, redis://..., or unset for the embedded filesystem broker.",
        kind=click.STRING)
    default_queue: str = setting(
        "vividly", "Queue that the vividly.* tasks are routed to and that workers consume.",
        env="VIVIDLY_QUEUE")
    google_cloud_project: str | None = setting(
        None, "Project of the Google Cloud APIs (Vertex AI, Monitoring, Run); unset means the "
        "broker URL's project.", kind=click.STRING, env="GOOGLE_CLOUD_PROJECT")
    database_url: str | None = setting(
        None, "SQLAlchemy URL of the database (the lessons' requests; the dispatchers' shared "
        "record with DISPATCH_RECORD=database); unset means SQLite.", kind=click.STRING)

    @functools.cached_property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.resolve()

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def effective_project(self) -> str | None:
        """GOOGLE_CLOUD_PROJECT, else the project of a pubsub:// broker URL."""
        if self.google_cloud_project:
            return self.google_cloud_project
        if self.effective_broker_url.startswith("pubsub://"):
            return urlsplit(self.effective_broker_url).netloc or None
        return None

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'vividly.sqlite'}"
