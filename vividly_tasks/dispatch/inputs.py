"""What a dispatch decision looks at: plain values, gathered by the dispatcher, kept by the
record, printed by ``--dry-run``. No I/O here."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Policy:
    """The settings a decision applies (``DISPATCH_*``)."""

    #: How many queued messages one task is expected to drain; sizes the task count.
    messages_per_task: int
    #: Most tasks running at once, across every execution of the job.
    max_tasks: int
    #: At most one launch per this many seconds, whatever the wake-ups.
    decision_window_seconds: float
    #: A Monitoring sample taken less than this after a launch does not show what the launch
    #: took yet (executions start, workers pull): only arrivals after the launch count then.
    metric_settle_seconds: float
    #: A launch not yet listed by the Run API counts as running for this long.
    launch_visibility_seconds: float
    #: A delayed message counts as ready this long before it is due (an execution's start-up).
    start_lead_seconds: float
    #: How long a job task waits without work before it exits (the job's WORKER_IDLE_TIMEOUT):
    #: a task that exited idle received nothing in that time before its exit.
    job_idle_timeout_seconds: float = 10.0
    #: The job's runtime budget (WORKER_MAX_RUNTIME), None for none: an execution that ran
    #: this long may have stopped at it with work left, so its exit proves nothing.
    job_max_runtime_seconds: float | None = None


@dataclass(frozen=True)
class BacklogSample:
    """The subscription's backlog as Cloud Monitoring last reported it."""

    #: ``pubsub.googleapis.com/subscription/num_undelivered_messages``.
    undelivered: int
    #: ``.../oldest_unacked_message_age``, seconds.
    oldest_unacked_age_seconds: float
    #: End of the sample's interval (``time.time()``): the backlog as it was then.
    sampled_at: float


@dataclass(frozen=True)
class Arrival:
    """A message seen through the wake-up push subscription (one per task id)."""

    task_id: str
    #: Pub/Sub's publish time (``time.time()``).
    published_at: float
    #: A Celery ``eta``/``countdown`` (``time.time()``), or None for work due now.
    due_at: float | None = None

    def ready_at(self, lead_seconds: float) -> float:
        """When the message becomes work an execution should start for."""
        if self.due_at is None:
            return self.published_at
        return max(self.published_at, self.due_at - lead_seconds)


@dataclass(frozen=True)
class RunningExecution:
    """An execution of the job that has not finished (Run Admin API v2, or a local run)."""

    name: str
    task_count: int
    #: Tasks still running or pending; finished tasks take no more messages.
    active_tasks: int


@dataclass(frozen=True)
class FinishedExecution:
    """An execution of the job that has finished, as its runner reports it."""

    name: str
    #: When its last task exited (``time.time()``).
    finished_at: float
    #: Every task exited 0 (a normal stop): only then does its exit prove anything.
    succeeded: bool
    #: When it started (``time.time()``), if known: one that ran for the job's runtime
    #: budget stopped at it, not idle.
    started_at: float | None = None


@dataclass(frozen=True)
class ExecutionStates:
    """What the runner says about the job's executions: those that run and those that
    finished (with when), so a launch it lists is never guessed at again."""

    running: list[RunningExecution]
    finished: list[FinishedExecution]

    @property
    def names(self) -> set[str]:
        return {e.name for e in self.running} | {e.name for e in self.finished}


@dataclass(frozen=True)
class Launch:
    """An execution this dispatcher started, remembered in the record."""

    name: str
    launched_at: float
    task_count: int
    #: The backlog (messages) the launch was sized for.
    sized_for: int
    #: The runner has listed it: from then on only the runner's word counts (running or
    #: finished), never the launch's age.
    seen: bool = False


def as_json(value: Any) -> Any:
    """Dataclasses (and lists of them) as plain JSON values."""
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value
