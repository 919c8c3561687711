"""The submit API: create the request row, then enqueue its generation.

The row is written first (``pending``), then the message is sent, then the row moves to
``queued``. If sending fails the row stays ``pending`` with the error recorded, and
``EnqueueFailed`` is raised with its id: the request is never silently stuck, and
``resubmit(id)`` sends it again. Sending the same request twice is harmless (the task is
idempotent), so a resubmit needs no certainty that the first send failed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from vividly_tasks.lessons.errors import EnqueueFailed
from vividly_tasks.lessons.models import ContentRequest
from vividly_tasks.lessons.repository import ContentRepository, parse_request_id
from vividly_tasks.lessons.status import Status
from vividly_tasks.lessons.validation import validate

logger = logging.getLogger(__name__)

#: Sends the generation message for a request id and modality (the task layer provides it).
Enqueue = Callable[[str, str], None]


def submit(
    repository: ContentRepository, enqueue: Enqueue, *, topic: str, modality: str,
    subject: str | None = None, grade_level: str | None = None,
    max_topic_chars: int = 200, max_field_chars: int = 100, request_id: uuid.UUID | None = None,
) -> ContentRequest:
    """Create and enqueue a request (with ``request_id`` if given, else a new one);
    ``InvalidRequest`` before anything is written when the input can never succeed,
    ``EnqueueFailed`` when the row exists but the send failed."""
    spec = validate(
        topic=topic, modality=modality, subject=subject, grade_level=grade_level,
        max_topic_chars=max_topic_chars, max_field_chars=max_field_chars,
    )
    row = repository.insert(
        topic=spec.topic, modality=spec.modality.value, subject=subject and spec.subject,
        # As validated: whitespace collapsed, so the stored text is within the length limit.
        grade_level=grade_level and " ".join(grade_level.split()), request_id=request_id,
    )
    return _enqueue(repository, enqueue, row)


def resubmit(
    repository: ContentRepository, enqueue: Enqueue, request_id: str
) -> ContentRequest:
    """Send a ``pending`` (enqueue failed) or ``queued`` request's message again."""
    row = repository.get(request_id)
    if row is None:
        raise LookupError(f"unknown request id {request_id}")
    if row.status not in {Status.PENDING, Status.QUEUED}:
        raise ValueError(f"request {request_id} is {row.status}; only pending or queued "
                         "requests are resubmitted")
    return _enqueue(repository, enqueue, row)


def _enqueue(
    repository: ContentRepository, enqueue: Enqueue, row: ContentRequest
) -> ContentRequest:
    request_id = str(row.id)
    try:
        enqueue(request_id, row.modality)
    except Exception as exc:
        error = f"enqueue failed: {type(exc).__name__}: {exc}"
        logger.error("request %s: %s", request_id, error, extra={"request_id": request_id})
        repository.record_enqueue_error(row.id, error)
        raise EnqueueFailed(request_id, exc) from exc
    repository.mark_queued(row.id)
    logger.info("request %s queued", request_id, extra={"request_id": request_id})
    refreshed = repository.get(row.id)
    assert refreshed is not None
    return refreshed


__all__ = ["Enqueue", "parse_request_id", "resubmit", "submit"]
