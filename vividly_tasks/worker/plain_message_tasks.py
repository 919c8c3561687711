"""Tasks run by plain Pub/Sub messages: the worker's side of ``transport/plain_messages.py``.

The transport turns a plain message on a bound queue into a call of the bound task with the
message's JSON object as keyword arguments; it cannot know the task's signature. The worker
can: before such a call runs, its arguments are bound to the signature, and a message that
does not fit is rejected with the reason (so it reaches the dead-letter topic, never retried).
At a worker's start every bound task must be registered, or the worker refuses to start.
"""

from __future__ import annotations

import inspect
from typing import Any

from celery.exceptions import ImproperlyConfigured, Reject

from vividly_tasks.transport.plain_messages import PLAIN_MESSAGE_HEADER


def check_arguments(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``Reject`` (no requeue) a plain message's call whose arguments do not fit ``task``."""
    if not task.request.get(PLAIN_MESSAGE_HEADER):
        return
    signature = inspect.signature(task.run)
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise Reject(
            f"plain message's JSON does not fit the task's arguments {parameters(signature)}: "
            f"{exc}",
            requeue=False,
        ) from None


def parameters(signature: inspect.Signature) -> str:
    """``(token, count=1)``: the names and defaults a message must fit, without annotations."""
    plain = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=plain, return_annotation=inspect.Signature.empty))


def check_bindings(bindings: dict[str, str], registered: Any) -> None:
    """Refuse a binding to a task this worker does not have, naming it and the queue."""
    unknown = [f"{queue} -> {task}" for queue, task in bindings.items() if task not in registered]
    if unknown:
        raise ImproperlyConfigured(
            f"PUBSUB_PLAIN_MESSAGE_TASKS binds queues to tasks this worker does not have: "
            f"{', '.join(unknown)}"
        )
