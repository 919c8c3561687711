"""The one JSON line a run logs at exit: what it did, how long it took, and why it ended."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from worker_entry.run import ExitReason, WorkerRun

logger = logging.getLogger(__name__)
# The summary is the line operators alert on: keep it even when LOG_LEVEL is WARNING.
logger.setLevel(logging.INFO)

#: Cloud Run's own variables, copied into the summary (as lower-case fields) when set.
CLOUD_RUN_VARIABLES = ("CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_ATTEMPT")
#: Fields repeated in the summary's message, for log formats that print only the message.
TEXT_FIELDS = ("exit_code", "received", "refused", "unmatched", "processed", "succeeded",
               "failed", "retried", "runtime_seconds")


def summary_record(
    run: WorkerRun, *, reason: ExitReason, exit_code: int, detail: str | None = None
) -> dict[str, Any]:
    """The summary's fields.

    ``received`` counts every message of the worker's queues it took, ``refused`` those it
    settled without running them: its consumer's refusals (an unregistered task, a malformed
    message) and the Pub/Sub transport's (not a Kombu message, beyond the receive limits),
    each dead-lettered (or, without a dead-letter topic, dropped) with the reason.
    ``unmatched`` counts the copies the transport dropped because no binding of their queue
    matched them (AMQP drops those unrouted). ``processed`` counts task runs that finished
    here: succeeded, failed, or ended in a retry (the retry is a new message, run later).
    ``success_rate`` is over final outcomes only, succeeded / (succeeded + failed), and null
    when there were none. ``released_delayed`` counts the delayed tasks (ETA or countdown
    still ahead) given back unstarted at the stop, to come back near their ETA for whoever
    runs then; ``released_delayed_first_due`` is the earliest of those ETAs (ISO 8601, UTC),
    null when none.
    """
    counts = run.counters.snapshot()
    transport = run.transport_receipts()
    unread = transport["dead_lettered"] + transport["dropped"]
    final = counts["succeeded"] + counts["failed"]
    record: dict[str, Any] = {
        "event": "worker_summary",
        "mode": run.mode,
        "exit_reason": str(reason),
        "exit_code": exit_code,
        "received": run.counters.received + unread,
        "refused": run.counters.refused + unread,
        "unmatched": transport["unmatched"],
        "released_delayed": transport["released_delayed"],
        "released_delayed_first_due": _iso(run.first_released_due_at()),
        "processed": final + counts["retried"],
        **counts,
        "success_rate": round(counts["succeeded"] / final, 4) if final else None,
        "runtime_seconds": round(run.runtime_seconds, 3),
    }
    if detail:
        record["detail"] = detail
    if run.missing_queues:
        record["missing_queues"] = run.missing_queues
    for name in CLOUD_RUN_VARIABLES:
        value = os.environ.get(name)
        if value is not None:
            record[name.lower()] = int(value) if value.isdigit() else value
    return record


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def log_summary(
    run: WorkerRun, *, reason: ExitReason, exit_code: int, detail: str | None = None
) -> dict[str, Any]:
    """Log the summary: INFO for a normal end, WARNING for an end that is normal but likely a
    mistake (a queue nobody had declared), ERROR when the worker could not work (non-zero
    exit), so an alert on severity catches it. The message itself carries the counters, so
    ``LOG_FORMAT=text`` (which prints only the message) shows them too."""
    record = summary_record(run, reason=reason, exit_code=exit_code, detail=detail)
    counters = " ".join(f"{name}={record[name]}" for name in TEXT_FIELDS)
    message = f"worker summary: {reason} ({counters})" + (f": {detail}" if detail else "")
    level = (logging.ERROR if exit_code != 0 else
             logging.WARNING if reason is ExitReason.QUEUE_MISSING else logging.INFO)
    logger.log(level, message, extra=record)
    return record
