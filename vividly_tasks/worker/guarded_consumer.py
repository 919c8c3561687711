"""The worker's task consumer: a message Celery cannot take is dead-lettered, never fatal.

Celery's consumer trusts the shape of a task message: a task name that is a list, a missing
``id`` or a body that is not ``[args, kwargs, embed]`` raises in the worker's event loop, and
Celery stops the worker ("Unrecoverable error"). The message is then redelivered to the next
worker, which dies the same way. ``GuardedConsumer`` (Celery's ``worker_consumer`` setting)
checks each task message against Celery's protocol 2 (docs/wire-format.md) before Celery sees
it, and rejects a bad one with the reason: on Pub/Sub its dead-letter copy carries it. Anything
Celery still raises on a message is handled the same way; connection errors still reconnect.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from celery.signals import task_rejected
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from vividly_tasks.worker.redaction import redactor_of
from vividly_tasks.worker.requests import MAX_REASON_CHARS, note_reason

logger = logging.getLogger(__name__)

#: Protocol 2 headers that are text or null when present.
TEXT_HEADERS = ("lang", "root_id", "parent_id", "group", "shadow", "eta", "expires",
                "argsrepr", "kwargsrepr", "origin")
#: What ``embed`` (the body's third item) may hold: canvas links, null or lists/objects.
EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def task_message_problem(message: Any) -> str | None:
    """Why ``message`` (a Kombu message) is not a Celery protocol 2 task message; None if it is.

    Checks only what Celery's consumer relies on without guarding it itself; the body is
    decoded with the consumer's accepted content types (``accept_content``), so nothing else is
    read.
    """
    headers = message.headers
    if not isinstance(headers, dict):
        return f"headers are {_kind(headers)}, not an object"
    return _identity_problem(headers) or _headers_problem(headers) or _body_problem(message)


def _identity_problem(headers: dict[str, Any]) -> str | None:
    task, task_id = headers.get("task"), headers.get("id")
    if not isinstance(task, str) or not task:
        return f"not a Celery task message: task header is {_short(task)} (protocol 2 needed)"
    if not isinstance(task_id, str) or not task_id:
        return f"task {_short(task)} has no id (id header is {_short(task_id)})"
    return None


def _headers_problem(headers: dict[str, Any]) -> str | None:
    wrong = next((name for name in TEXT_HEADERS
                  if not isinstance(headers.get(name), str | None)), None)
    if wrong is not None:
        return f"header {wrong} is {_kind(headers[wrong])}, not text"
    # Celery reads an empty eta or expires as a time, and fails outside its own guard.
    empty = next((name for name in ("eta", "expires") if headers.get(name) == ""), None)
    if empty is not None:
        return f"header {empty} is empty, not a time"
    if not _is_count(headers.get("retries", 0)):
        return f"header retries is {_short(headers.get('retries'))}, not a count"
    if not _is_time_limit(headers.get("timelimit")):
        return f"header timelimit is {_short(headers.get('timelimit'))}, not [hard, soft] seconds"
    return None


def _is_count(value: Any) -> bool:
    return value is None or (type(value) is int and value >= 0)


def _is_seconds(value: Any) -> bool:
    return value is None or (
        type(value) in (int, float) and math.isfinite(value) and value >= 0
    )


def _is_time_limit(value: Any) -> bool:
    return value is None or (
        isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_seconds, value))
    )


def _body_problem(message: Any) -> str | None:
    try:
        body = message.decode()
    except ContentDisallowed:
        accepted = ", ".join(sorted(message.accept or ())) or "nothing"
        content_type = _short(message.content_type)
        return f"content type {content_type} refused (the worker accepts {accepted})"
    except Exception as exc:
        return f"body is not valid {message.content_type}: {_short(str(exc), 200)}"
    if not isinstance(body, list | tuple) or len(body) != 3:
        return f"body is {_short(body)}, not [args, kwargs, embed]"
    return _call_problem(*body)


def _call_problem(args: Any, kwargs: Any, embed: Any) -> str | None:
    if not isinstance(args, list | tuple):
        return f"task args are {_kind(args)}, not a list"
    if not isinstance(kwargs, dict):
        return f"task kwargs are {_kind(kwargs)}, not an object"
    if embed is None or (
        isinstance(embed, dict) and set(embed) <= EMBED_KEYS
        and all(value is None or isinstance(value, list | dict) for value in embed.values())
    ):
        return None
    return f"embed is {_short(embed)}, not null or an object of {', '.join(sorted(EMBED_KEYS))}"


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with task messages checked before Celery reads them."""

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            problem = task_message_problem(message)
            if problem is not None:
                return self.refuse(message, problem)
            try:
                return handle(message)
            except self.connection_errors:
                raise
            except Exception as exc:
                logger.exception("task message %s broke the consumer", message.delivery_tag)
                if not message.acknowledged:
                    self.refuse(message, f"the worker could not take it: {exc!r}")
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        # Celery acks an undecodable message (it is lost); dead-letter it with the reason.
        self.refuse(message, f"body cannot be decoded: {exc}")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        # Celery rejects it (dead-lettered on Pub/Sub) and marks the result failed.
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        note_reason(message, f"unregistered task {_short(name)}: this worker does not have it",
                    redactor_of(self.app))
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        note_reason(message, f"invalid task message: {exc}", redactor_of(self.app))
        super().on_invalid_task(body, message, exc)
        task_rejected.send(sender=self, message=message, exc=exc)

    def refuse(self, message: Any, reason: str) -> None:
        """Reject without requeue: the broker dead-letters the message with ``reason``.

        Sends Celery's ``task_rejected`` (as its consumer does for a message of unknown
        type), so whoever counts what a worker took, the job's summary, counts this too.
        """
        redact = redactor_of(self.app)
        reason = redact(reason)[:MAX_REASON_CHARS]
        logger.warning("refused a task message: %s", reason)
        note_reason(message, reason, redact)
        message.reject_log_error(logger, self.connection_errors)
        task_rejected.send(sender=self, message=message, exc=None)
