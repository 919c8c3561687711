"""Wake-up push deliveries read as arrivals.

The wake-up subscription is a push subscription on the queue's topic, separate from the one
workers pull from, so every task published reaches the dispatcher too: its task id (one arrival
per task, however often a copy is published again) and, from the Celery headers of the
envelope (docs/wire-format.md), its ``eta``, which is how the dispatcher knows delayed work
before Monitoring counts it. A body it cannot read is still an arrival, due now. A delivery
names the subscription it came from: one from another subscription is no wake-up.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from vividly_tasks.dispatch.inputs import Arrival


class NotAPushDelivery(ValueError):
    """The request body is not a Pub/Sub push delivery (``{"message": {...}, ...}``)."""


class ForeignSubscription(ValueError):
    """A push delivery from a subscription other than the wake-up subscription."""


def arrival_from_push(body: bytes, received_at: float, *,
                      subscription: str | Sequence[str] | None = None) -> Arrival:
    """The arrival a push delivery announces; ``received_at`` stands in for a missing
    publish time. With ``subscription`` (``projects/P/subscriptions/S``, or only ``S``; or
    several, one per queue the workers consume), the delivery must name one of them."""
    try:
        delivery = json.loads(body)
        message = delivery["message"]
    except (ValueError, TypeError, KeyError) as exc:
        raise NotAPushDelivery(f"not a Pub/Sub push delivery: {exc}") from None
    if not isinstance(message, dict):
        raise NotAPushDelivery("not a Pub/Sub push delivery: 'message' is not an object")
    if subscription is not None:
        _check_subscription(delivery.get("subscription"), subscription)
    attributes = message.get("attributes") or {}
    headers = _celery_headers(message.get("data"))
    task_id = (headers.get("id") or attributes.get("task_id") or message.get("messageId")
               or message.get("message_id"))
    if not task_id:
        raise NotAPushDelivery("push delivery without a message id")
    published = _timestamp(message.get("publishTime") or message.get("publish_time"))
    return Arrival(task_id=str(task_id),
                   published_at=published if published is not None else received_at,
                   due_at=_timestamp(headers.get("eta")))


def _check_subscription(named: Any, expected: str | Sequence[str]) -> None:
    if not isinstance(named, str) or not named:
        raise ForeignSubscription("push delivery without its subscription")
    allowed = (expected,) if isinstance(expected, str) else tuple(expected)
    for name in allowed:
        if (named if "/" in name else named.rpartition("/")[2]) == name:
            return
    shown = allowed[0] if len(allowed) == 1 else list(allowed)
    raise ForeignSubscription(f"push delivery from {named[:200]!r}, not from the wake-up "
                              f"subscription {shown!r}")


def _celery_headers(data: Any) -> dict[str, Any]:
    if not isinstance(data, str):
        return {}
    try:
        envelope = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return {}
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    return headers if isinstance(headers, dict) else {}


def _timestamp(value: Any) -> float | None:
    """RFC 3339 / ISO 8601 (Pub/Sub's nanoseconds cut to microseconds) as ``time.time()``."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most 6 fractional digits before Python 3.11's limits
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:  # Celery's naive eta is UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
