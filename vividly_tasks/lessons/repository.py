"""Reads and writes of content requests. Every status change is one guarded UPDATE whose WHERE
clause comes from the status machine (``status.sources``), so concurrent writers cannot move a
request along a path the machine forbids; the row count tells the caller whether it won.

Every error it stores is masked by ``redact`` first (the settings' secrets, as
``vividly_tasks.worker.redaction`` masks them), so an upstream answer that echoes an API key
never lands in the ``error`` column."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update

from vividly_tasks.lessons.database import ContentDatabase
from vividly_tasks.lessons.generator import NO_USAGE, ModelUsage
from vividly_tasks.lessons.models import ContentRequest, utcnow
from vividly_tasks.lessons.status import Stage, Status, sources


def parse_request_id(value: str | uuid.UUID) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def spent_on_model(row: ContentRequest) -> ModelUsage:
    """What a request's attempts have spent on the model so far."""
    return ModelUsage(row.model_name or "", row.prompt_tokens or 0, row.output_tokens or 0,
                      row.model_calls or 0)


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a request for one attempt, valid while its lease is renewed."""

    request_id: uuid.UUID
    token: str
    holder: str
    attempt: int
    #: What earlier attempts spent on the model, read when the claim was taken.
    spent: ModelUsage = NO_USAGE


class ContentRepository:
    """The content requests table, as the pipeline and the submit API need it."""

    def __init__(self, database: ContentDatabase,
                 redact: Callable[[str], str] = str) -> None:
        self.database = database
        self.redact = redact

    # Reading.
    def get(self, request_id: str | uuid.UUID) -> ContentRequest | None:
        parsed = parse_request_id(request_id)
        if parsed is None:
            return None
        with self.database.session() as session:
            return session.get(ContentRequest, parsed)

    def list_by_status(self, status: Status, limit: int = 100) -> list[ContentRequest]:
        with self.database.session() as session:
            query = (
                select(ContentRequest)
                .where(ContentRequest.status == status.value)
                .order_by(ContentRequest.created_at)
                .limit(limit)
            )
            return list(session.scalars(query))

    # Creating.
    def insert(
        self, *, topic: str, modality: str, subject: str | None = None,
        grade_level: str | None = None, request_id: uuid.UUID | None = None,
    ) -> ContentRequest:
        """A new ``pending`` request, stored as given (validation is the pipeline's first stage,
        so rows written by other producers get the same checks)."""
        now = utcnow()
        row = ContentRequest(
            id=request_id or uuid.uuid4(), topic=topic, subject=subject,
            grade_level=grade_level, modality=modality, status=Status.PENDING.value,
            progress=0, attempts=0, created_at=now, updated_at=now,
        )
        with self.database.session() as session:
            session.add(row)
        return row

    # Guarded transitions.
    def _transition(
        self, request_id: uuid.UUID, target: Status, *conditions: ColumnElement[bool],
        **values: Any,
    ) -> bool:
        allowed = [status.value for status in sources(target)]
        statement = (
            update(ContentRequest)
            .where(ContentRequest.id == request_id, ContentRequest.status.in_(allowed), *conditions)
            .values(status=target.value, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        with self.database.session() as session:
            return session.execute(statement).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def _update_claimed(self, claim: Claim, **values: Any) -> bool:
        """Update a request only while ``claim`` still holds it (no status change)."""
        statement = (
            update(ContentRequest)
            .where(
                ContentRequest.id == claim.request_id,
                ContentRequest.claim_token == claim.token,
                ContentRequest.status == Status.GENERATING.value,
            )
            .values(updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        with self.database.session() as session:
            return session.execute(statement).rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def mark_queued(self, request_id: uuid.UUID) -> bool:
        """pending -> queued after the broker accepted the message (no-op if a worker already
        claimed it, which the guard makes safe)."""
        return self._transition(request_id, Status.QUEUED, error=None, queued_at=utcnow())

    def record_enqueue_error(self, request_id: uuid.UUID, error: str) -> None:
        """Leave the request ``pending`` with the reason its message was not enqueued."""
        statement = (
            update(ContentRequest)
            .where(ContentRequest.id == request_id,
                   ContentRequest.status == Status.PENDING.value)
            .values(error=self.redact(error), updated_at=utcnow())
        )
        with self.database.session() as session:
            session.execute(statement)

    def claim(
        self, request_id: uuid.UUID, *, holder: str, lease_seconds: float,
        now: datetime | None = None,
    ) -> Claim | None:
        """Take the request for one attempt, atomically: succeeds for one caller when the
        request is not terminal and nobody holds a live lease on it. A claim whose lease ran
        out (its worker died) is taken over."""
        now = now or utcnow()
        token = uuid.uuid4().hex
        claimed = self._transition(
            request_id,
            Status.GENERATING,
            or_(ContentRequest.claim_token.is_(None), ContentRequest.lease_expires_at < now),
            claim_token=token,
            claimed_by=holder,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=ContentRequest.attempts + 1,
            started_at=now,
            retry_at=None,
            stage=Stage.VALIDATE.value,
            progress=0,
        )
        if not claimed:
            return None
        row = self.get(request_id)
        if row is None:
            return Claim(request_id=request_id, token=token, holder=holder, attempt=0)
        return Claim(request_id=request_id, token=token, holder=holder, attempt=row.attempts,
                     spent=spent_on_model(row))

    def renew(self, claim: Claim, lease_seconds: float) -> bool:
        """Extend the lease; False when the claim was lost (taken over or finished)."""
        return self._update_claimed(
            claim, lease_expires_at=utcnow() + timedelta(seconds=lease_seconds)
        )

    def set_stage(
        self, claim: Claim, stage: Stage, progress: int, lease_seconds: float
    ) -> bool:
        return self._update_claimed(
            claim, stage=stage.value, progress=progress,
            lease_expires_at=utcnow() + timedelta(seconds=lease_seconds),
        )

    def add_usage(self, claim: Claim, usage: ModelUsage) -> bool:
        """Add a model call's tokens to the request (they add up over attempts: its cost)."""
        return self._update_claimed(
            claim, model_name=usage.model,
            prompt_tokens=ContentRequest.prompt_tokens + usage.prompt_tokens,
            output_tokens=ContentRequest.output_tokens + usage.output_tokens,
            model_calls=ContentRequest.model_calls + usage.calls,
        )

    def release(self, claim: Claim, error: str, retry_at: datetime | None = None) -> bool:
        """Give the claim up after a transient error: ``retrying``, with the reason and when
        the retry is due (None: not known), so the retry can claim at once."""
        return self._transition(
            claim.request_id, Status.RETRYING, ContentRequest.claim_token == claim.token,
            claim_token=None, claimed_by=None, lease_expires_at=None, retry_at=retry_at,
            error=self.redact(error),
        )

    def complete(self, claim: Claim, artifacts: dict[str, str]) -> bool:
        now = utcnow()
        return self._transition(
            claim.request_id,
            Status.COMPLETED,
            ContentRequest.claim_token == claim.token,
            stage=Stage.COMPLETE.value, progress=100, artifacts=artifacts, error=None,
            retry_at=None, claim_token=None, claimed_by=None, lease_expires_at=None,
            finished_at=now,
        )

    def fail(self, request_id: uuid.UUID, error: str, claim: Claim | None = None) -> bool:
        """Mark the request failed with ``error``: with a claim, only while it still holds."""
        conditions = [] if claim is None else [ContentRequest.claim_token == claim.token]
        return self._transition(
            request_id, Status.FAILED, *conditions,
            error=self.redact(error), claim_token=None, claimed_by=None, lease_expires_at=None,
            retry_at=None, finished_at=utcnow(),
        )
