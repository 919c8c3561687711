"""The tasks: thin verbs with explicit names; the work itself lives in the domain modules.

``vividly.generate_content(request_id)`` maps the content runner's outcomes onto Celery:

- completed / no-op (already finished) / lost (another delivery took over): return, ack.
- busy (another delivery holds a live claim): retry after the lease's remaining time; a
  duplicate then finds the request finished, a redelivery after a crash takes the claim over.
- invalid input or a permanent failure: recorded as ``failed`` by the runner, then
  ``Reject(requeue=False)``: no retry, the broker dead-letters the message.
- transient error (storage, database or a hosted service unavailable, a tool gone): retry with
  exponential backoff and full jitter, never sooner than the server's ``Retry-After``, up to
  ``CONTENT_MAX_RETRIES``; meanwhile the request is ``retrying``, its row and a last
  ``task-progress`` event saying why and until when; the retry resumes at the first unfinished
  stage. The last failure is recorded and rejected like above.

An error leaves the content domain with the settings' secrets masked (``secrets_masked``), so
the reason, the retry's stored exception, the events and their tracebacks show none, even when
a hosted service's answer quoted the request's API key.

The retry policy is applied here rather than with ``autoretry_for``: Celery reads those options
when the task is defined, at import, and the settings are read later, on first use.
"""

from __future__ import annotations

import functools
import logging
import random
import socket
import time
import uuid
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Reject
from celery.utils.saferepr import saferepr
from celery.utils.time import get_exponential_backoff_interval

from vividly_tasks import spans
from vividly_tasks.lessons.errors import (
    EnqueueFailed,
    InvalidRequest,
    PermanentFailure,
    ServiceUnavailable,
    TransientError,
)
from vividly_tasks.lessons.generator import ModelUsage
from vividly_tasks.lessons.models import ContentRequest, utcnow
from vividly_tasks.lessons.repository import parse_request_id
from vividly_tasks.lessons.requests import submit
from vividly_tasks.lessons.runner import shortened
from vividly_tasks.lessons.services import (
    ContentServices,
)
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Stage, Status
from vividly_tasks.worker.redaction import redact_exception, redactor_of, secrets_masked

logger = logging.getLogger(__name__)

GENERATE_CONTENT = "vividly.generate_content"
PROGRESS_STATE = "PROGRESS"
PROGRESS_EVENT = "task-progress"
#: Upper bound of the random delay added to a busy retry, so racing duplicates spread out.
BUSY_JITTER_SECONDS = 1.0


@shared_task(name="vividly.health_check")
def health_check() -> dict[str, Any]:
    """Round trip through broker, worker and result backend; for smoke tests of a deployment."""
    return {"hostname": socket.gethostname(), "time": time.time()}


#: Shortest wait before a retry after a transient error: never a hot loop.
MIN_RETRY_SECONDS = 1.0


def transient_countdown(settings: Settings, retries: int, exc: TransientError) -> float:
    """Seconds before retry ``retries + 1``: exponential backoff with full jitter, at least
    what the server asked for (``Retry-After``), both capped at the longest backoff."""
    backoff = float(get_exponential_backoff_interval(
        factor=settings.content_retry_backoff_seconds, retries=retries,
        maximum=settings.content_retry_backoff_max_seconds, full_jitter=True,
    ))
    asked = exc.retry_after_seconds if isinstance(exc, ServiceUnavailable) else None
    if asked is not None:
        backoff = max(backoff, min(asked, float(settings.content_retry_backoff_max_seconds)))
    return max(MIN_RETRY_SECONDS, backoff)


@functools.cache
def content_services(settings: Settings) -> ContentServices:
    """This process's content services (built after the worker forked, on first use)."""
    return ContentServices.from_settings(settings)


@shared_task(bind=True, name=GENERATE_CONTENT)
def generate_content(
    self: Task, request_id: str, transient_retries: int = 0, course_id: str | None = None,
) -> dict[str, Any]:
    """Generate the lesson (and video) of a content request; idempotent per request id.
    In a course (``course_id``, a chord's header: ``course_tasks``) a request that failed for
    good is returned as the result instead of rejected, so the chord still runs its callback."""
    settings: Settings = self.app.settings
    final_attempt = transient_retries >= settings.content_max_retries

    meta: dict[str, Any] = {}

    def publish_progress() -> None:
        if not self.request.id:
            return
        self.update_state(state=PROGRESS_STATE, meta=dict(meta))
        if self.app.conf.worker_send_task_events and not self.request.is_eager:
            # Monitors (Flower, `celery events`) see only events, not the result backend: a
            # custom `task-progress` event makes the task's state PROGRESS there, and its
            # `result` is the meta, as `AsyncResult(id).result` is while the task runs.
            self.send_event(PROGRESS_EVENT, result=saferepr(meta), **meta)

    def progress(rid: str, stage: Stage, percent: int) -> None:
        meta.update(request_id=rid, status=Status.GENERATING.value, stage=stage.value,
                    progress=percent)
        publish_progress()

    def usage(rid: str, spent: ModelUsage) -> None:
        meta.update(request_id=rid, model=spent.model, model_calls=spent.calls,
                    prompt_tokens=spent.prompt_tokens, output_tokens=spent.output_tokens)
        publish_progress()

    countdowns: list[float] = []

    def retry_delay(exc: TransientError) -> float:
        """Decided once, when the runner records the retry's due time; used below."""
        countdowns.append(transient_countdown(settings, transient_retries, exc))
        return countdowns[-1]

    shown = shortened(request_id)  # a hostile id may be megabytes long: never log it whole
    log_extra = {"request_id": shown}
    try:
        with secrets_masked(redactor_of(self.app)):
            outcome = content_services(settings).runner.run(
                request_id, progress=progress, usage=usage, final_attempt=final_attempt,
                retry_delay=retry_delay,
            )
    except (InvalidRequest, PermanentFailure) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        logger.error("request %s failed, not retried: %s", shown, reason, extra=log_extra)
        if course_id is not None:
            return course_failure(request_id, course_id, reason)
        raise Reject(reason, requeue=False) from exc
    except TransientError as exc:
        if final_attempt:
            reason = f"gave up after {transient_retries + 1} attempts: {exc}"
            logger.error("request %s failed: %s", shown, reason, extra=log_extra)
            if course_id is not None:
                return course_failure(request_id, course_id, reason)
            raise Reject(reason, requeue=False) from exc
        countdown = (countdowns[-1] if countdowns
                     else transient_countdown(settings, transient_retries, exc))
        logger.warning(
            "request %s: transient error, retry %d/%d in %.1f s: %s", shown,
            transient_retries + 1, settings.content_max_retries, countdown, exc, extra=log_extra,
        )
        if meta:  # the request was claimed: say that it now waits, until when and why
            # (exc left the block above masked already)
            meta.update(status=Status.RETRYING.value, error=f"{type(exc).__name__}: {exc}",
                        retry_at=(utcnow() + timedelta(seconds=countdown)).isoformat())
            publish_progress()
        raise self.retry(
            exc=exc, countdown=countdown, max_retries=self.request.retries + 1,
            kwargs={"request_id": request_id, "transient_retries": transient_retries + 1,
                    "course_id": course_id},
        ) from exc
    if outcome.kind == "busy":
        countdown = outcome.retry_after_seconds + random.uniform(0, BUSY_JITTER_SECONDS)  # noqa: S311
        logger.info(
            "request %s is busy (%s); retry in %.1f s", shown, outcome.detail, countdown,
            extra=log_extra,
        )
        raise self.retry(
            countdown=countdown, max_retries=self.request.retries + 1,
            kwargs={"request_id": request_id, "transient_retries": transient_retries,
                    "course_id": course_id},
        )
    logger.info(
        "request %s: delivery %s (%s)", shown, outcome.kind, outcome.status, extra=log_extra
    )
    return outcome.as_dict()


def course_failure(request_id: str, course_id: str, reason: str) -> dict[str, Any]:
    """A course lesson's end when it failed for good: acked, not dead-lettered; the row says
    ``failed`` with the reason, and the course's index lists it from there."""
    return {"outcome": "failed", "request_id": request_id, "status": Status.FAILED.value,
            "detail": reason, "course_id": course_id}


def send_generate_content(app: Any, request_id: str, modality: str) -> None:
    """Enqueue generation; the task id is the request id, so ``AsyncResult(request_id)``
    follows it (and Flower lists it under that id)."""
    del modality  # one task for both; the time limit per modality is applied by the pipeline
    app.send_task(GENERATE_CONTENT, args=[request_id], task_id=request_id)


def submit_content_request(
    app: Any, *, topic: str, modality: str, subject: str | None = None,
    grade_level: str | None = None, request_id: uuid.UUID | None = None,
) -> ContentRequest:
    """The Python submit API: create the request row and enqueue its generation."""
    settings: Settings = app.settings
    services = content_services(settings)
    with spans.span("submit", **{"vividly.modality": modality}):
        row = submit(
            services.repository,
            functools.partial(send_generate_content, app),
            topic=topic, modality=modality, subject=subject, grade_level=grade_level,
            max_topic_chars=settings.content_max_topic_chars,
            max_field_chars=settings.content_max_field_chars, request_id=request_id,
        )
        spans.annotate(**{"vividly.request_id": str(row.id)})
        return row


@shared_task(bind=True, name="vividly.submit_content")
def submit_content(
    self: Task, topic: str, modality: str, subject: str | None = None,
    grade_level: str | None = None,
) -> str:
    """Create a content request and enqueue its generation; returns the request id (for
    ``celery call`` and producers that only speak Celery)."""
    row = submit_content_request(
        self.app, topic=topic, modality=modality, subject=subject, grade_level=grade_level
    )
    return str(row.id)


CONTENT_FIELDS = ("topic", "modality", "subject", "grade_level")
CONTENT_MESSAGE_NAMESPACE = uuid.UUID("0e7c5d52-9a43-4a55-8b0c-5c1f3e0f1d2a")


@shared_task(bind=True, name="vividly.content_message")
def content_message(
    self: Task, request_id: str | None = None, topic: str | None = None,
    modality: str | None = None, subject: str | None = None, grade_level: str | None = None,
) -> str:
    """A content request from a system that publishes plain JSON (bind its queue to this task
    with PUBSUB_PLAIN_MESSAGE_TASKS): ``{"request_id": ID}`` generates a request that exists;
    ``{"topic", "modality"[, "subject", "grade_level"]}`` creates one, validated like
    ``submit``, then generates it. Either way generation is ``vividly.generate_content`` with
    the request id as task id; returns the request id. Input that can never succeed is
    rejected with the reason (dead-lettered); a database outage is retried."""
    settings: Settings = self.app.settings
    fields = {"request_id": request_id, "topic": topic, "modality": modality,
              "subject": subject, "grade_level": grade_level}
    try:
        wrong = [f"{name} is {type(value).__name__}, not a string"
                 for name, value in fields.items() if not isinstance(value, str | None)]
        if wrong:
            raise InvalidRequest("; ".join(wrong))
        repository = content_services(settings).repository
        if request_id is None:
            if topic is None or modality is None:
                raise InvalidRequest("give request_id, or topic and modality")
            # One request per message however often it is delivered: the row's id derives
            # from the task id, which a redelivery keeps (plain_messages.py).
            own_id = uuid.uuid5(CONTENT_MESSAGE_NAMESPACE, str(self.request.id))
            created = repository.get(own_id)
            if created is None:
                return str(submit_content_request(
                    self.app, topic=topic, modality=modality, subject=subject,
                    grade_level=grade_level, request_id=own_id,
                ).id)
            request_id = str(created.id)  # a redelivery: generate what the first one created
        elif extra := [name for name in CONTENT_FIELDS if fields[name] is not None]:
            raise InvalidRequest(f"request_id given with {', '.join(extra)}: give one or the other")
        row = repository.get(request_id)
        if row is None:
            if parse_request_id(request_id) is None:
                raise InvalidRequest(f"request id {request_id!r} is not a UUID")
            raise InvalidRequest(f"unknown request id {request_id}")
        send_generate_content(self.app, str(row.id), row.modality)
        return str(row.id)
    except (InvalidRequest, EnqueueFailed) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        logger.error("content message refused: %s", reason)
        raise Reject(reason, requeue=False) from exc
    except TransientError as exc:
        # Stored with the retry: masked as generate_content's errors are.
        redact_exception(exc, redactor_of(self.app))
        if self.request.retries >= settings.content_max_retries:
            raise Reject(f"gave up after {self.request.retries + 1} attempts: {exc}",
                         requeue=False) from exc
        raise self.retry(
            exc=exc, max_retries=self.request.retries + 1,
            countdown=transient_countdown(settings, self.request.retries, exc),
        ) from exc
