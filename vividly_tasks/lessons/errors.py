"""The content domain's own errors: library errors are converted into these once, at the edge
(``database``, ``storage``, ``narration``/``video``), so the task layer decides on a few types."""

from __future__ import annotations


class ContentError(Exception):
    """Base of the content domain's errors."""


class InvalidRequest(ContentError):
    """The request can never succeed as it stands: fail fast, record the reason, no retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentFailure(ContentError):
    """A failure that a retry would repeat (a renderer that rejects its input, a time limit)."""


class TimeLimitExceeded(PermanentFailure):
    """An attempt ran past its modality's time limit."""


class TransientError(ContentError):
    """A dependency is unavailable for now: retry with backoff."""


class ToolMissing(TransientError):
    """A program the worker needs (ffmpeg, espeak-ng) is not installed or vanished: the
    worker's fault, never the request's, so it is retried (a worker checks its tools at start,
    so this is a tool that disappeared mid-run)."""


class ServiceUnavailable(TransientError):
    """A hosted service (the model, Cloud Text-to-Speech) is rate-limited, down, slow, or
    refuses this worker's credentials. ``retry_after_seconds`` is the wait the server asked
    for (``Retry-After``), when it sent one: the retry waits at least that long."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class StorageUnavailable(TransientError):
    """The artifact store could not be written or read."""


class DatabaseUnavailable(TransientError):
    """The content database could not be reached or was busy."""


class ClaimLost(ContentError):
    """Another delivery took this request over (our lease ran out): stop, leave it to them."""


class EnqueueFailed(ContentError):
    """The request row exists (``pending``, with this error recorded) but its message was not
    enqueued; ``resubmit(request_id)`` tries again."""

    def __init__(self, request_id: str, cause: BaseException) -> None:
        super().__init__(f"request {request_id} was created but not enqueued: {cause}")
        self.request_id = request_id
