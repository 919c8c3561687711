"""The dispatch rule, as a pure function: the inputs in, start nothing or one execution out.

1. **What waits.** With a Monitoring sample taken after the last launch had time to settle,
   the backlog is the sample's ``num_undelivered_messages``, less the delayed messages known
   (from the wake-up subscription) to sit in it and not be due yet, plus the due arrivals
   published after the sample (Monitoring lags by a minute or more). Without such a sample
   (none at all, as on the emulator, or one older than the last launch): the arrivals that
   became due after the last launch; the launch took what was there before it.
2. **What runs covers.** Each running execution (listed by the Run API, or launched here and
   not listed yet) takes ``messages_per_task`` per active task, less what it was launched for
   when the backlog was counted from arrivals (those are not in that count any more).
3. **Start at most one.** Nothing when nothing waits, when what runs covers it, when the job
   already runs ``max_tasks`` tasks, or within ``decision_window_seconds`` of the last launch
   (a storm of wake-ups, several dispatchers: one launch). Otherwise one execution of
   ``ceil(uncovered / messages_per_task)`` tasks, capped so the running total stays within
   ``max_tasks``.

A delayed message (Celery ``eta``/``countdown``) is not work until ``start_lead_seconds``
before it is due: a queue holding only future tasks starts nothing, and ``next_check_at`` says
when to look again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from vividly_tasks.dispatch.inputs import (
    Arrival,
    BacklogSample,
    Launch,
    Policy,
    RunningExecution,
)


class Reason(StrEnum):
    NOTHING_WAITING = "nothing_waiting"
    COVERED = "covered_by_running_executions"
    AT_MAXIMUM = "max_tasks_running"
    DECISION_WINDOW = "launched_within_decision_window"
    BACKLOG = "backlog_not_covered"


@dataclass(frozen=True)
class Decision:
    """Start nothing (``task_count == 0``) or one execution of ``task_count`` tasks."""

    reason: Reason
    task_count: int
    #: Messages waiting for an execution, as counted (see ``basis``).
    waiting: int
    #: "metric": the Monitoring sample plus later arrivals; "arrivals": arrivals only.
    basis: str
    #: Messages the running executions are expected to take on top of what they hold.
    covered: int
    running_tasks: int
    #: Delayed messages known and not due yet.
    delayed: int
    #: When the answer may change without a new wake-up (window end, a delayed message due).
    next_check_at: float | None

    @property
    def launch(self) -> bool:
        return self.task_count > 0

    @property
    def sized_for(self) -> int:
        """The messages this launch is for (what the record remembers)."""
        return max(0, self.waiting - self.covered)


def decide(
    now: float,
    policy: Policy,
    *,
    backlog: BacklogSample | None,
    arrivals: Sequence[Arrival],
    running: Sequence[RunningExecution],
    launches: Sequence[Launch],
) -> Decision:
    """The decision at ``now`` (``time.time()``); see the module docstring for the rule."""
    lead = policy.start_lead_seconds
    last = max(launches, key=lambda launch: launch.launched_at, default=None)
    ready = [a for a in arrivals if a.ready_at(lead) <= now]
    delayed = [a for a in arrivals if a.ready_at(lead) > now]
    next_due = min((a.ready_at(lead) for a in delayed), default=None)

    fresh_metric = backlog is not None and (
        last is None or backlog.sampled_at >= last.launched_at + policy.metric_settle_seconds
    )
    if fresh_metric:
        assert backlog is not None
        delayed_in_sample = sum(1 for a in delayed if a.published_at <= backlog.sampled_at)
        later = sum(1 for a in ready if a.published_at > backlog.sampled_at)
        waiting = max(0, backlog.undelivered - delayed_in_sample) + later
        basis = "metric"
    else:
        since = last.launched_at if last is not None else -math.inf
        waiting = sum(1 for a in ready if a.ready_at(lead) > since)
        basis = "arrivals"

    executions = _active_executions(now, policy, running, launches)
    running_tasks = sum(e.active_tasks for e in executions)
    sized = {launch.name: launch.sized_for for launch in launches}
    covered = sum(
        max(0, e.active_tasks * policy.messages_per_task
            - (0 if fresh_metric else sized.get(e.name, 0)))
        for e in executions
    )

    def result(reason: Reason, task_count: int = 0, check_at: float | None = None) -> Decision:
        checks = [t for t in (check_at, next_due) if t is not None]
        return Decision(reason=reason, task_count=task_count, waiting=waiting, basis=basis,
                        covered=min(covered, waiting), running_tasks=running_tasks,
                        delayed=len(delayed), next_check_at=min(checks, default=None))

    uncovered = waiting - covered
    if waiting == 0:
        return result(Reason.NOTHING_WAITING)
    # While executions run, look again a window later: they may stop (runtime budget) with
    # work left, and no wake-up would come for messages that were already there.
    recheck = now + policy.decision_window_seconds
    if uncovered <= 0:
        return result(Reason.COVERED, check_at=recheck)
    if running_tasks >= policy.max_tasks:
        return result(Reason.AT_MAXIMUM, check_at=recheck)
    if last is not None and now - last.launched_at < policy.decision_window_seconds:
        return result(Reason.DECISION_WINDOW,
                      check_at=last.launched_at + policy.decision_window_seconds)
    tasks = min(math.ceil(uncovered / policy.messages_per_task),
                policy.max_tasks - running_tasks)
    return result(Reason.BACKLOG, task_count=tasks)


def _active_executions(
    now: float, policy: Policy, running: Sequence[RunningExecution],
    launches: Sequence[Launch],
) -> list[RunningExecution]:
    """The listed executions, plus launches too recent to be listed (the API lags too)."""
    listed = {execution.name for execution in running}
    unlisted = [
        RunningExecution(launch.name, launch.task_count, launch.task_count)
        for launch in launches
        if launch.name not in listed
        and now - launch.launched_at < policy.launch_visibility_seconds
    ]
    return [*running, *unlisted]
