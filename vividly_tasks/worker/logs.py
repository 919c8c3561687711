"""Structured logs: one JSON object a line, with Cloud Logging's ``severity`` field.

Celery configures its own handlers; ``StructuredLogs`` hooks its ``after_setup_logger`` and
``after_setup_task_logger`` signals to give those handlers our formatter (``apply_format``),
so worker and task logs share one shape. Those signals name no app, so the hooks are connected
only once a worker of the app it was made for starts in this process (``celeryd_init`` names
the worker): another app's worker keeps its own logging. Records logged inside a task carry
``task_id`` and ``task_name``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal

from celery import current_task
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init
from pythonjsonlogger.json import JsonFormatter

from vividly_tasks import spans
from vividly_tasks.worker.redaction import Redact, Redactor
from vividly_tasks.worker.safe_text import printable

LogFormat = Literal["json", "text"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TaskContextFilter(logging.Filter):
    """Adds the running Celery task's id and name to records logged while it runs, and, when
    tracing is on (``tracing.py``) and a span is active, Cloud Logging's trace fields
    (``logging.googleapis.com/trace``, ``.../spanId``, ``.../trace_sampled``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task
        request_id = getattr(getattr(task, "request", None), "id", None)
        if request_id and not hasattr(record, "task_id"):
            record.task_id = request_id
            record.task_name = task.name
        trace_fields = spans.trace_log_fields()
        if trace_fields is not None:
            record.__dict__.update(trace_fields)
        return True


class TextFormatter(logging.Formatter):
    """Lines for people: control characters in a message escaped, a traceback's line breaks
    kept."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), keep="\n")

    def formatStack(self, stack_info: str) -> str:
        return printable(super().formatStack(stack_info), keep="\n")


class RedactingFormatter(logging.Formatter):
    """Another formatter's whole output, secrets masked."""

    def __init__(self, inner: logging.Formatter, redact: Redact) -> None:
        super().__init__()
        self.inner = inner
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.inner.format(record))


def make_formatter(log_format: LogFormat,
                   redact: Redact | None = None) -> logging.Formatter:
    formatter: logging.Formatter = TextFormatter() if log_format == "text" else JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "severity", "name": "logger"},
        timestamp="time",
    )
    return formatter if redact is None else RedactingFormatter(formatter, redact)


def apply_format(logger: logging.Logger, log_format: LogFormat,
                 redact: Redact | None = None) -> None:
    """Give every handler of ``logger`` our formatter (masking with ``redact``) and the
    task-context filter."""
    formatter = make_formatter(log_format, redact)
    for handler in logger.handlers:
        handler.setFormatter(formatter)
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())


def configure_process_logging(log_format: LogFormat, level: str,
                              secrets: Iterable[str] = ()) -> None:
    """Logging for processes that are not Celery workers (the CLI, the service's HTTP side),
    with ``secrets`` masked."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(level.upper())
    apply_format(root, log_format, Redactor(secrets).resolve())


class StructuredLogs:
    """Our log format, masked by ``redactor``, on the worker logging of one app (connect,
    disconnect)."""

    def __init__(self, app: Any, log_format: LogFormat | Callable[[], LogFormat],
                 redactor: Redactor) -> None:
        self.app = app
        #: A callable is read when the worker sets up its logging (settings read late).
        self.log_format = log_format
        self.redactor = redactor

    def connect(self) -> None:
        celeryd_init.connect(self._on_worker_init, weak=False)

    def disconnect(self) -> None:
        celeryd_init.disconnect(self._on_worker_init)
        after_setup_logger.disconnect(self._apply)
        after_setup_task_logger.disconnect(self._apply)

    def _on_worker_init(self, sender: Any = None, instance: Any = None, **_: Any) -> None:
        if getattr(instance, "app", None) is not self.app:
            return
        # Its secrets are read here, once, rather than inside the first log call.
        self.redactor.resolve()
        # The worker sets up its logging next, in this process, for this app.
        after_setup_logger.connect(self._apply, weak=False)
        after_setup_task_logger.connect(self._apply, weak=False)

    def _apply(self, logger: logging.Logger, **_: Any) -> None:
        log_format = self.log_format() if callable(self.log_format) else self.log_format
        apply_format(logger, log_format, self.redactor)
