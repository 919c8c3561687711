"""Plain Pub/Sub messages from other systems, run as the task their queue is bound to.

Producers that cannot speak Celery (an API in another language that publishes
``{"request_id": ...}``) publish plain JSON. The transport option ``plain_message_tasks``
(the ``PUBSUB_PLAIN_MESSAGE_TASKS`` setting) binds a queue to a task name; on a bound queue:

* a message with the ``kombu-envelope`` attribute is a Kombu envelope, decoded by ``wire``;
* any other message is plain: its data must be one JSON object, which becomes the keyword
  arguments of a Celery (protocol 2) message for the bound task. The Pub/Sub facts travel in
  its headers, so the task reads them from ``self.request`` (see docs/wire-format.md).

On an unbound queue every message must be a Kombu envelope, as before. Whether the arguments
fit the task's signature is checked where the task is known, in the worker
(``vividly_tasks.worker.plain_message_tasks``); the checks here need only the bytes. Like
``wire.decode``, ``decode`` is total: any data and attributes give a payload or
``PoisonMessage`` with the reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from proto.datetime_helpers import DatetimeWithNanoseconds

from vividly_tasks.transport import wire
from vividly_tasks.transport.limits import DEFAULT_LIMITS, ReceiveLimits
from vividly_tasks.transport.poison import PoisonMessage

#: Header set on the Celery message built from a plain one (the worker checks its arguments).
PLAIN_MESSAGE_HEADER = "pubsub_plain_message"
#: Headers carrying the Pub/Sub message's attributes (an object) and publish time (RFC 3339).
ATTRIBUTES_HEADER = "pubsub_attributes"
PUBLISH_TIME_HEADER = "pubsub_publish_time"
#: Task ids of plain messages are derived from the message id: a redelivery keeps its id.
TASK_ID_NAMESPACE = uuid.UUID("4f0c6f55-2f55-4a8e-9a54-53d1c4a7c0de")
MAX_KWARGSREPR_CHARS = 1024
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def parse_bindings(value: Any) -> dict[str, str]:
    """The option as given (a mapping, or its JSON text from the environment) as queue -> task."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"plain_message_tasks is not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ValueError(
            f"plain_message_tasks must map queue names to task names, not {type(value).__name__}"
        )
    bindings: dict[str, str] = {}
    for queue, task in value.items():
        if not isinstance(queue, str) or not queue or not isinstance(task, str) or not task:
            raise ValueError(
                f"plain_message_tasks: {queue!r} -> {task!r} is not a queue name -> task name"
            )
        bindings[queue] = task
    return bindings


def decode(
    message: Any,
    *,
    queue: str,
    task: str | None,
    accepted_content_types: frozenset[str] | None = None,
    limits: ReceiveLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """A received message (a protobuf or proto-plus PubsubMessage) as a Kombu payload: a Kombu
    envelope, or (on a queue bound to ``task``) a plain message made into a call of ``task``;
    else ``PoisonMessage``. Either way within ``limits`` (limits.py)."""
    attributes = dict(message.attributes)
    if task is None or wire.ENVELOPE_ATTRIBUTE in attributes:
        return wire.decode(message.data, attributes,
                           accepted_content_types=accepted_content_types, limits=limits)
    limits.check_message(message.data, attributes)
    return task_payload(
        message.data, attributes, task=task, queue=queue, message_id=message.message_id,
        publish_time=rfc3339(message.publish_time), limits=limits,
    )


def rfc3339(publish_time: Any) -> str | None:
    """A publish time as RFC 3339 text, from protobuf (the worker) or proto-plus (tools)."""
    if hasattr(publish_time, "ToJsonString"):  # protobuf: unset is all zeros, not None
        if not (publish_time.seconds or publish_time.nanos):
            return None
        publish_time = DatetimeWithNanoseconds.from_timestamp_pb(publish_time)
    return publish_time.rfc3339() if publish_time else None


def task_payload(
    data: bytes,
    attributes: Mapping[str, str],
    *,
    task: str,
    queue: str,
    message_id: str,
    publish_time: str | None,
    limits: ReceiveLimits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """The Kombu payload of a Celery message that calls ``task(**json_object_in_data)``."""
    kwargs = json_object(data, limits)
    try:
        body = json.dumps([[], kwargs, EMBED], ensure_ascii=False, allow_nan=False)
    except (ValueError, RecursionError):
        raise PoisonMessage("data is JSON too deeply nested to pass on") from None
    task_id = str(
        uuid.uuid5(TASK_ID_NAMESPACE, f"{queue}/{message_id}") if message_id else uuid.uuid4()
    )
    kwargsrepr = repr(kwargs)
    if len(kwargsrepr) > MAX_KWARGSREPR_CHARS:
        kwargsrepr = kwargsrepr[: MAX_KWARGSREPR_CHARS - 3] + "..."
    headers = {
        "lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
        "argsrepr": "()", "kwargsrepr": kwargsrepr, "origin": f"pubsub:{queue}",
        PLAIN_MESSAGE_HEADER: True,
        ATTRIBUTES_HEADER: dict(attributes),
        PUBLISH_TIME_HEADER: publish_time,
    }
    return {
        "body": body,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": headers,
        "properties": {
            "correlation_id": task_id, "delivery_mode": 2, "priority": 0, "body_encoding": None,
            # The default exchange routes by queue name: this very queue accepts it, and a
            # retry (Celery re-sends to the delivery's routing) comes back to it.
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }


def json_object(data: bytes, limits: ReceiveLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The data as one JSON object (standard JSON: no NaN or Infinity), or ``PoisonMessage``."""
    try:
        text = data.decode("utf-8")
        limits.check_json_items(text, "plain message: data")
        value = json.loads(text, parse_constant=_refuse_constant)
    except PoisonMessage:
        raise
    except UnicodeDecodeError:
        raise PoisonMessage("plain message: data is not UTF-8 text, so not JSON") from None
    except json.JSONDecodeError as exc:
        raise PoisonMessage(
            f"plain message: data is not JSON ({exc.msg} at byte {exc.pos})"
        ) from None
    except ValueError as exc:  # a constant refused below
        raise PoisonMessage(f"plain message: data is not standard JSON ({exc})") from None
    except RecursionError:
        raise PoisonMessage("plain message: data is JSON nested too deeply") from None
    limits.check_json_depth(value, text, "plain message: data")
    if not isinstance(value, dict):
        raise PoisonMessage(
            f"plain message: data is JSON {type(value).__name__}, not an object of keyword "
            "arguments"
        )
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
