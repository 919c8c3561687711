"""Structured logs: one JSON object a line, with Cloud Logging's ``severity`` field.

Celery configures its own handlers; the app hooks its ``after_setup_logger`` and
``after_setup_task_logger`` signals to give those handlers our formatter (``apply_format``),
so worker and task logs share one shape. Records logged inside a task carry ``task_id`` and
``task_name``.
"""

from __future__ import annotations

import logging
import sys

from celery import current_task
from pythonjsonlogger.json import JsonFormatter

from vividly_tasks.settings import LogFormat

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TaskContextFilter(logging.Filter):
    """Adds the running Celery task's id and name to records logged while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = current_task
        request_id = getattr(getattr(task, "request", None), "id", None)
        if request_id and not hasattr(record, "task_id"):
            record.task_id = request_id
            record.task_name = task.name
        return True


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "severity", "name": "logger"},
        timestamp="time",
    )


def apply_format(logger: logging.Logger, log_format: LogFormat) -> None:
    """Give every handler of ``logger`` our formatter and the task-context filter."""
    formatter = make_formatter(log_format)
    for handler in logger.handlers:
        handler.setFormatter(formatter)
        if not any(isinstance(f, TaskContextFilter) for f in handler.filters):
            handler.addFilter(TaskContextFilter())


def configure_process_logging(log_format: LogFormat, level: str) -> None:
    """Logging for processes that are not Celery workers (the CLI, the service's HTTP side)."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    root.setLevel(level.upper())
    apply_format(root, log_format)
