"""One delivery of a request: claim it, run the pipeline under a renewed lease, complete it.

Idempotency lives here. A delivery first takes the request's claim with one conditional UPDATE
(``ContentRepository.claim``); only one delivery can hold it. A request that is already
``completed`` or ``failed`` makes the delivery a no-op. A request claimed by someone else whose
lease is still live makes it ``busy`` (the task retries it after the lease's remaining time); a
lease that ran out (its worker died) is taken over. While it works, the holder renews its lease
from a background thread; completion is conditional on still holding the claim, so two
deliveries racing produce exactly one completion, and both write the same keys (one artifact
set).

An attempt that fails with a transient error gives its claim up and leaves the request
``retrying``, with the reason and the retry's due time (``retry_delay``, the task's backoff).
The retry resumes where that attempt stopped: the pipeline reads back what finished stages kept
(``stages``), which are removed once the request is completed or failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from vividly_tasks.lessons.errors import (
    ClaimLost,
    DatabaseUnavailable,
    InvalidRequest,
    PermanentFailure,
    TransientError,
)
from vividly_tasks.lessons.generator import LessonGenerator, ModelUsage
from vividly_tasks.lessons.models import utcnow
from vividly_tasks.lessons.pipeline import (
    VIDEO_ONLY_STAGES,
    PipelineConfig,
    RequestFields,
    run_pipeline,
)
from vividly_tasks.lessons.repository import Claim, ContentRepository, parse_request_id
from vividly_tasks.lessons.stages import StageStore
from vividly_tasks.lessons.status import Stage, is_terminal
from vividly_tasks.lessons.storage import Storage

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, Stage, int], None]
#: Told the request's model, calls and tokens so far (every attempt's): when an attempt starts
#: (if earlier ones spent any) and after each call to the model.
UsageCallback = Callable[[str, ModelUsage], None]
#: Seconds until the retry of an attempt that failed with this transient error.
RetryDelay = Callable[[TransientError], float]
OutcomeKind = Literal["completed", "noop", "busy", "lost"]


@dataclass(frozen=True)
class Outcome:
    """What a delivery did. ``busy``: retry after ``retry_after_seconds``."""

    kind: OutcomeKind
    request_id: str
    status: str
    detail: str = ""
    retry_after_seconds: float = 0.0
    attempt: int = 0
    artifacts: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.kind, "request_id": self.request_id, "status": self.status,
            "detail": self.detail, "attempt": self.attempt, "artifacts": self.artifacts,
        }


#: How much of a malformed request id an error message quotes (a UUID is 36 characters).
MAX_QUOTED_ID_CHARS = 80


def shortened(value: str) -> str:
    """``value``, or its head and its length when it is too long to quote in an error."""
    text = str(value)
    if len(text) <= MAX_QUOTED_ID_CHARS:
        return text
    return f"{text[:MAX_QUOTED_ID_CHARS]}... ({len(text)} characters)"


def holder_name() -> str:
    """Who holds a claim: host and process, so an operator can find it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    """Renews a claim's lease every third of its length until stopped; notes if it was lost."""

    def __init__(self, repository: ContentRepository, claim: Claim, lease_seconds: float) -> None:
        self.repository = repository
        self.claim = claim
        self.lease_seconds = lease_seconds
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.repository.renew(self.claim, self.lease_seconds):
                    self.lost = True
                    return
            except DatabaseUnavailable as exc:
                logger.warning("could not renew the claim on %s: %s", self.claim.request_id, exc)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class _ClaimReporter:
    """Records each stage and each model call's tokens on the row (renewing the lease) and
    passes them on."""

    def __init__(
        self, repository: ContentRepository, claim: Claim, keeper: LeaseKeeper,
        lease_seconds: float, callback: ProgressCallback | None,
        usage_callback: UsageCallback | None, spent_before: ModelUsage,
    ) -> None:
        self.repository, self.claim, self.keeper = repository, claim, keeper
        self.lease_seconds, self.callback = lease_seconds, callback
        self.usage_callback, self.spent = usage_callback, spent_before

    def usage(self, usage: ModelUsage) -> None:
        self.spent += usage
        if not self.repository.add_usage(self.claim, usage):
            logger.warning("request %s: tokens not recorded (claim lost)", self.claim.request_id)
        logger.info(
            "request %s: %s used %d prompt and %d output tokens", self.claim.request_id,
            usage.model, usage.prompt_tokens, usage.output_tokens,
            extra={"request_id": str(self.claim.request_id), "model": usage.model,
                   "prompt_tokens": usage.prompt_tokens, "output_tokens": usage.output_tokens},
        )
        if self.usage_callback is not None:
            self.usage_callback(str(self.claim.request_id), self.spent)

    def stage(self, stage: Stage, percent: int) -> None:
        request_id = str(self.claim.request_id)
        if self.keeper.lost or not self.repository.set_stage(
            self.claim, stage, percent, self.lease_seconds
        ):
            raise ClaimLost(f"request {request_id} was taken over by another delivery")
        logger.info(
            "request %s: stage %s (%d%%)", request_id, stage.value, percent,
            extra={"request_id": request_id, "stage": stage.value, "progress": percent},
        )
        if self.callback is not None:
            self.callback(request_id, stage, percent)


class ContentRunner:
    """Processes deliveries of content requests; one per worker process."""

    def __init__(
        self, *, repository: ContentRepository, storage: Storage, generator: LessonGenerator,
        config: PipelineConfig, work_root: Path, lease_seconds: float,
    ) -> None:
        self.repository = repository
        self.storage = storage
        self.generator = generator
        self.config = config
        self.work_root = work_root
        self.lease_seconds = lease_seconds

    def run(
        self, request_id: str, *, progress: ProgressCallback | None = None,
        usage: UsageCallback | None = None, final_attempt: bool = False,
        retry_delay: RetryDelay | None = None,
    ) -> Outcome:
        """Process one delivery. Raises ``InvalidRequest``/``PermanentFailure`` (recorded as
        ``failed``) and ``TransientError`` (the request ``retrying``, due ``retry_delay(error)``
        seconds from now, its claim released for the retry; or ``failed`` when
        ``final_attempt``)."""
        parsed = parse_request_id(request_id)
        if parsed is None:
            raise InvalidRequest(f"request id {shortened(request_id)!r} is not a UUID")
        row = self.repository.get(parsed)
        if row is None:
            raise InvalidRequest(f"unknown request id {request_id}")
        if is_terminal(row.status):
            return Outcome(
                "noop", str(parsed), row.status, "already finished", attempt=row.attempts
            )
        claim = self.repository.claim(
            parsed, holder=holder_name(), lease_seconds=self.lease_seconds
        )
        if claim is None:
            return self._not_claimed(parsed)
        logger.info(
            "request %s claimed (attempt %d)", parsed, claim.attempt,
            extra={"request_id": str(parsed), "attempt": claim.attempt},
        )
        started = time.monotonic()
        fields = RequestFields(
            id=parsed, topic=row.topic, modality=row.modality, subject=row.subject,
            grade_level=row.grade_level,
        )
        if usage is not None and claim.spent.calls:
            usage(str(parsed), claim.spent)  # what earlier attempts spent, shown from the start
        with _WorkDir(self.work_root / str(parsed), claim.token) as workdir, LeaseKeeper(
            self.repository, claim, self.lease_seconds
        ) as keeper:
            reporter = _ClaimReporter(
                self.repository, claim, keeper, self.lease_seconds, progress, usage, claim.spent
            )
            try:
                result = run_pipeline(
                    fields, config=self.config, generator=self.generator, storage=self.storage,
                    reporter=reporter, workdir=workdir, spent_before=claim.spent,
                )
            except ClaimLost as exc:
                logger.warning("%s; stopping this delivery", exc)
                return Outcome("lost", str(parsed), "generating", str(exc), attempt=claim.attempt)
            except InvalidRequest as exc:
                self.repository.fail(parsed, f"invalid request: {exc.reason}", claim)
                raise
            except PermanentFailure as exc:
                self._fail(claim, f"{type(exc).__name__}: {exc}")
                raise
            except TransientError as exc:
                self._after_transient(claim, exc, final_attempt, retry_delay)
                raise
            except Exception as exc:
                # A bug, not the request's fault: record it and dead-letter the message, so it
                # can be replayed once fixed, rather than leave the request claimed forever.
                logger.exception("request %s: unexpected error", parsed,
                                 extra={"request_id": str(parsed)})
                error = f"internal error: {type(exc).__name__}: {exc}"
                self._fail(claim, error)
                raise PermanentFailure(error) from exc
        if not self.repository.complete(claim, result.artifacts):
            return Outcome("lost", str(parsed), "generating", "claim lost before completion")
        self._forget_stages(parsed)
        if progress is not None:
            progress(str(parsed), Stage.COMPLETE, 100)
        seconds = time.monotonic() - started
        skipped = sorted(VIDEO_ONLY_STAGES) if result.manifest["modality"] == "text" else []
        logger.info(
            "request %s completed in %.2f s%s", parsed, seconds,
            f" (text: {', '.join(skipped)} skipped)" if skipped else "",
            extra={
                "request_id": str(parsed), "attempt": claim.attempt,
                "modality": result.manifest["modality"], "duration_seconds": round(seconds, 3),
                "skipped_stages": skipped,
            },
        )
        return Outcome(
            "completed", str(parsed), "completed", attempt=claim.attempt,
            artifacts=result.artifacts,
        )

    def _not_claimed(self, request_id: uuid.UUID) -> Outcome:
        row = self.repository.get(request_id)
        if row is None or is_terminal(row.status):
            status = row.status if row is not None else "unknown"
            return Outcome("noop", str(request_id), status, "already finished")
        wait = 1.0
        if row.lease_expires_at is not None:
            wait = max(1.0, (row.lease_expires_at - utcnow()).total_seconds())
        return Outcome(
            "busy", str(request_id), row.status, f"claimed by {row.claimed_by}",
            retry_after_seconds=wait, attempt=row.attempts,
        )

    def _fail(self, claim: Claim, error: str) -> None:
        if self.repository.fail(claim.request_id, error, claim):
            self._forget_stages(claim.request_id)

    def _forget_stages(self, request_id: uuid.UUID) -> None:
        """The request is finished: what its stages kept for a retry is not needed any more."""
        StageStore(self.storage, request_id, self.work_root).clear()

    def _after_transient(
        self, claim: Claim, exc: TransientError, final_attempt: bool,
        retry_delay: RetryDelay | None,
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        try:
            if final_attempt:
                self._fail(claim, f"gave up after retries: {error}")
            else:
                due = None if retry_delay is None else utcnow() + timedelta(
                    seconds=retry_delay(exc))
                self.repository.release(claim, f"attempt {claim.attempt} failed: {error}", due)
        except DatabaseUnavailable as db_exc:
            # The lease runs out on its own; the retry then takes the claim over.
            logger.warning("could not record the failure of %s: %s", claim.request_id, db_exc)

    def fail_unclaimed(self, request_id: str, error: str) -> None:
        """Record a final failure when no claim is held (e.g. retries ran out while busy)."""
        parsed = parse_request_id(request_id)
        if parsed is not None:
            self.repository.fail(parsed, error)


class _WorkDir:
    """``<root>/<token>``: this attempt's scratch space; earlier attempts' leftovers (a killed
    worker's) are removed first, and ours on the way out."""

    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.path = root / token

    def __enter__(self) -> Path:
        if self.root.exists():
            for stale in self.root.iterdir():
                shutil.rmtree(stale, ignore_errors=True)
        self.path.mkdir(parents=True)
        return self.path

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):  # another attempt's directory may have appeared
            self.root.rmdir()
