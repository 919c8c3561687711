"""The one JSON line a run logs at exit: what it did, how long it took, and why it ended."""

from __future__ import annotations

import logging
import os
from typing import Any

from worker_entry.run import ExitReason, WorkerRun

logger = logging.getLogger(__name__)
# The summary is the line operators alert on: keep it even when LOG_LEVEL is WARNING.
logger.setLevel(logging.INFO)

#: Cloud Run's own variables, copied into the summary (as lower-case fields) when set.
CLOUD_RUN_VARIABLES = ("CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX", "CLOUD_RUN_TASK_ATTEMPT")


def summary_record(
    run: WorkerRun, *, reason: ExitReason, exit_code: int, detail: str | None = None
) -> dict[str, Any]:
    """The summary's fields.

    ``processed`` counts task runs that finished here: succeeded, failed, or ended in a retry
    (the retry is a new message, run later). ``success_rate`` is over final outcomes only,
    succeeded / (succeeded + failed), and null when there were none.
    """
    counts = run.counters.snapshot()
    final = counts["succeeded"] + counts["failed"]
    record: dict[str, Any] = {
        "event": "worker_summary",
        "mode": run.mode,
        "exit_reason": str(reason),
        "exit_code": exit_code,
        "received": run.counters.received,
        "processed": final + counts["retried"],
        **counts,
        "success_rate": round(counts["succeeded"] / final, 4) if final else None,
        "runtime_seconds": round(run.runtime_seconds, 3),
    }
    if detail:
        record["detail"] = detail
    for name in CLOUD_RUN_VARIABLES:
        value = os.environ.get(name)
        if value is not None:
            record[name.lower()] = int(value) if value.isdigit() else value
    return record


def log_summary(
    run: WorkerRun, *, reason: ExitReason, exit_code: int, detail: str | None = None
) -> dict[str, Any]:
    record = summary_record(run, reason=reason, exit_code=exit_code, detail=detail)
    message = f"worker summary: {reason}" + (f": {detail}" if detail else "")
    logger.info(message, extra=record)
    return record
