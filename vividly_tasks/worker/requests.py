"""The request class of a worker's tasks: dead-letter reasons, and Pub/Sub's metadata.

* A task that raises ``celery.exceptions.Reject(reason, requeue=False)`` has its message
  rejected by the worker's main process; on Pub/Sub that publishes a copy to the queue's
  dead-letter topic. Celery's own reject carries no reason, so this request tells the channel
  the reason just before Celery rejects. The reason, and what Celery then stores and sends
  (the failed result, the ``task-failed`` event's traceback), are masked by the app's
  redactor first (``redaction.py``).
* As a pool process accepts a task, the channel hears that its message started: a release
  of it at shutdown then counts toward the dead-letter policy, while a message released
  before it started is renewed instead (``transport/qos.py``, ``release_all``).
* The transport puts Pub/Sub's metadata of a received message in ``delivery_info`` (the
  headers stay as the producer sent them), and Celery's request keeps only four keys of it.
  This request passes the Pub/Sub ones on, so a task reads ``self.request.delivery_attempt``
  (also ``pubsub_message_id``, ``pubsub_publish_time``, ``pubsub_subscription``, and the same
  keys in ``self.request.delivery_info``).

``Task.Request`` is Celery's documented extension point; the ``TaskRequests`` worker bootstep
gives this class to every task of one app that uses Celery's own (a task with a request class
of its own keeps it).
"""

from __future__ import annotations

import ast
import contextlib
from typing import Any

from celery import bootsteps
from celery.exceptions import Reject
from celery.worker.request import Request

from vividly_tasks.worker.redaction import Redact, redact_exception, redactor_of

MAX_REASON_CHARS = 1000
#: ``Task.Request`` as Celery leaves it: a path, or the class once resolved.
CELERY_REQUESTS = ("celery.worker.request:Request", Request)


#: ``delivery_info`` keys of the Pub/Sub transport (``vividly_tasks.transport.wire`` names
#: them; a test checks that the two agree) that reach ``self.request``.
PUBSUB_REQUEST_FIELDS = (
    "delivery_attempt", "pubsub_message_id", "pubsub_publish_time", "pubsub_subscription",
)


class TaskRequest(Request):  # type: ignore[misc]
    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        info = message.delivery_info or {}
        metadata = {key: info[key] for key in PUBSUB_REQUEST_FIELDS if key in info}
        if metadata:
            self._request_dict.update(metadata)
            self._request_dict["delivery_info"] = {**self._delivery_info, **metadata}

    def on_accepted(self, pid: Any, time_accepted: float) -> None:
        # A pool process took the task (Celery's own subclass replaces execute_using_pool,
        # not this): from here a release of its message is a failed attempt.
        started = getattr(self.message.channel, "note_started", None)
        if started is not None:
            started(self.message.delivery_tag)
        super().on_accepted(pid, time_accepted)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, Reject) and not exc.requeue:
            redact = redactor_of(self.app)
            redact_exception(exc, redact)
            exc_info.traceback = redact(exc_info.traceback or "")
            note_reason(self.message, f"{self.task_name}: {plain_reason(exc)}", redact)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def plain_reason(exc: Reject) -> str:
    """The reason as the task gave it: across the pool it arrives as its repr()."""
    reason = exc.reason
    if isinstance(reason, str) and len(reason) >= 2 and reason[0] == reason[-1] in "'\"":
        with contextlib.suppress(ValueError, SyntaxError):
            reason = ast.literal_eval(reason)
    return str(reason or repr(exc))


def note_reason(message: Any, reason: str, redact: Redact) -> None:
    """Attach ``reason``, secrets masked, to a message about to be rejected (if its channel
    keeps reasons)."""
    setter = getattr(message.channel, "set_dead_letter_reason", None)
    if setter is not None:
        # Masked whole, then cut: a cut first could leave the head of a secret unmasked.
        setter(message.delivery_tag, redact(reason)[:MAX_REASON_CHARS])


class TaskRequests(bootsteps.Step):  # type: ignore[misc]
    """Gives the tasks of this worker's app that use Celery's request class this one.

    Runs as the worker is built, after the app is finalized and ``--include`` modules are
    imported, and before the consumer builds its per-task strategies (which read
    ``task.Request``).
    """

    label = "Task requests"

    def __init__(self, w: Any, **kwargs: Any) -> None:
        for task in w.app.tasks.values():
            if task.Request in CELERY_REQUESTS:
                task.Request = TaskRequest
