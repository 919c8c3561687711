"""The dispatch rule, as a pure function: the inputs in, start nothing or one execution out.

**Facts it rests on.** The arrivals (every task published, with its publish time and eta,
from the wake-up subscription), the runner's execution states (running with their active
tasks; finished with when, and whether every task exited 0), the launches this dispatcher
made, and Cloud Monitoring's two metrics of the workers' subscription when there are any.

1. **What is done.** An arrival is *proven done* by either fact:

   - *an idle exit*: a job task exits idle only after ``job_idle_timeout_seconds`` in which it
     received nothing, with nothing reserved, running or nearly due. So a finished execution
     whose tasks all exited 0 at ``finished_at``, and that ran for less than the job's
     runtime budget, proves that every message deliverable at
     ``finished_at - job_idle_timeout_seconds`` was taken: published by then, and due by
     then if delayed (a delayed task the execution handed back, due later, is proven
     nothing, so it is still to do when it comes due);
   - *the metric*: ``oldest_unacked_message_age`` sampled at ``s`` proves every message
     published before ``s - age`` acknowledged (and ``num_undelivered_messages == 0`` every
     message published by ``s``).

   Proven arrivals are done whatever else is known; the others are *still to do* once they
   are ready (a delayed one ``start_lead_seconds`` before it is due).
2. **What waits.** The still-to-do arrivals. Monitoring is the check against arrivals the
   dispatcher never saw (a wake-up lost, a push refused, a record lost): with a sample that
   is newer than every finished execution and than the last launch plus
   ``metric_settle_seconds`` (so it shows what they took), what waits is the sample's
   undelivered count, less the delayed arrivals published before it and not ready, plus the
   still-to-do arrivals published after it.
3. **What runs covers.** Each running execution takes ``messages_per_task`` per active task.
   A launch counts as running, with all its tasks, until the runner lists it; once listed
   (running or finished) only the runner's word counts; a launch the runner never listed
   stops counting ``launch_visibility_seconds`` after it was made.
4. **Start at most one.** Nothing when nothing waits, when what runs covers it, when the job
   already runs ``max_tasks`` tasks, or within ``decision_window_seconds`` of the last launch
   unless the runner reports that launch finished (the window only spaces launches whose
   effect is not known yet).
   Otherwise one execution of ``ceil(uncovered / messages_per_task)`` tasks, capped so the
   running total stays within ``max_tasks``. A burst thus grows its execution count as its
   arrivals exceed what runs covers, whatever the pace of the wake-ups.

The rule reads the arrivals still to do only as a few counts (``ArrivalCounts``): the
dispatcher's record counts them by index ranges, each stopped at ``count_limit`` (a higher
count would start no more tasks), so a decision costs the same at 100 arrivals or 100,000;
``decide`` is the same rule on a list (the simulation, the tests).

**Failure modes.** An execution that ran for the job's runtime budget
(``job_max_runtime_seconds``, from its start to its completion) proves nothing: it may have
stopped at the budget with work left, which stays to do. An exit 0 that was not idle for
another reason (``WORKER_MAX_TASKS`` reached with work left, a budget set longer here than
the job's) proves too much: the work left is found by the next Monitoring sample (newer than
that exit) or the safety-net schedule. A failed or
cancelled task proves nothing, so its messages stay to do until a later idle exit or the
metric proves them. A task that held a message when another execution exited idle does not
make that exit's proof wrong for the message: it is counted by what runs, and if that task
dies the message is redelivered after its lease and found by the metric. A
``job_idle_timeout_seconds`` longer than the job's real one proves too much (the same
recovery); a shorter one only proves less. A released delayed message comes back near its
due time (Pub/Sub's nack deadline is at most 600 s): the next execution is started for its
due time, whatever execution handed it back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from vividly_tasks.dispatch.inputs import (
    Arrival,
    BacklogSample,
    FinishedExecution,
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
    #: Arrivals proven done (they may be forgotten).
    proven: frozenset[str] = frozenset()

    @property
    def launch(self) -> bool:
        return self.task_count > 0

    @property
    def sized_for(self) -> int:
        """The messages this launch is for (what the record remembers)."""
        return max(0, self.waiting - self.covered)


def proven_done(arrival: Arrival, *, idle_exit_proof: float, metric_proof: float) -> bool:
    """Whether the facts prove ``arrival`` taken (see the module docstring, step 1)."""
    deliverable = max(arrival.published_at, arrival.due_at or arrival.published_at)
    return deliverable <= idle_exit_proof or arrival.published_at < metric_proof


def idle_exit_proof(policy: Policy, finished: Sequence[FinishedExecution]) -> float:
    """Every message deliverable by this time was taken (``-inf``: nothing is proven)."""
    return max((f.finished_at - policy.job_idle_timeout_seconds
                for f in finished if f.succeeded and not _ran_full_budget(policy, f)),
               default=-math.inf)


def _ran_full_budget(policy: Policy, execution: FinishedExecution) -> bool:
    budget = policy.job_max_runtime_seconds
    return (budget is not None and execution.started_at is not None
            and execution.finished_at - execution.started_at >= budget)


def metric_proof(backlog: BacklogSample | None) -> float:
    """Every message published before this time was acknowledged, per Monitoring."""
    if backlog is None:
        return -math.inf
    if backlog.undelivered == 0:
        return math.nextafter(backlog.sampled_at, math.inf)
    if backlog.oldest_unacked_age_seconds <= 0:  # no age point: it proves nothing
        return -math.inf
    return backlog.sampled_at - backlog.oldest_unacked_age_seconds


@dataclass(frozen=True)
class ArrivalCounts:
    """The still-to-do arrivals at a decision, as the few counts the rule uses (a record
    counts them with its indexes, without reading every arrival)."""

    #: Ready now (a delayed one ``start_lead_seconds`` before it is due).
    ready: int
    #: Not ready yet.
    delayed: int
    #: When the first delayed one becomes ready.
    next_ready_at: float | None
    #: Ready ones published after the Monitoring sample (0 without a sample).
    ready_after_sample: int = 0
    #: Delayed ones published at or before the sample (0 without a sample).
    delayed_in_sample: int = 0
    #: The counts stop here, if anywhere (``count_limit``): the decision is the same beyond.
    limit: int | None = None


def count_limit(policy: Policy, running: Sequence[RunningExecution],
                launches: Sequence[Launch]) -> int:
    """A count of ready arrivals this high starts as many tasks as any higher count: it
    exceeds what every running execution and launch could cover plus ``max_tasks`` tasks'
    worth (a record may stop counting there, so a decision costs the same at 100 arrivals
    or 100,000)."""
    tasks = (policy.max_tasks + sum(e.active_tasks for e in running)
             + sum(launch.task_count for launch in launches))
    return tasks * policy.messages_per_task + 1


def count_arrivals(to_do: Sequence[Arrival], now: float, lead_seconds: float,
                   sampled_at: float | None) -> ArrivalCounts:
    """The counts of a list of still-to-do arrivals (the simulation, the tests)."""
    ready = [a for a in to_do if a.ready_at(lead_seconds) <= now]
    delayed = [a for a in to_do if a.ready_at(lead_seconds) > now]
    after = -math.inf if sampled_at is None else sampled_at
    return ArrivalCounts(
        ready=len(ready), delayed=len(delayed),
        next_ready_at=min((a.ready_at(lead_seconds) for a in delayed), default=None),
        ready_after_sample=0 if sampled_at is None else sum(
            1 for a in ready if a.published_at > after),
        delayed_in_sample=0 if sampled_at is None else sum(
            1 for a in delayed if a.published_at <= after),
    )


def decide(
    now: float,
    policy: Policy,
    *,
    backlog: BacklogSample | None,
    arrivals: Sequence[Arrival],
    running: Sequence[RunningExecution],
    launches: Sequence[Launch],
    finished: Sequence[FinishedExecution] = (),
) -> Decision:
    """The decision at ``now`` (``time.time()``); see the module docstring for the rule."""
    by_exit = idle_exit_proof(policy, finished)
    by_metric = metric_proof(backlog)
    proven = frozenset(a.task_id for a in arrivals
                       if proven_done(a, idle_exit_proof=by_exit, metric_proof=by_metric))
    to_do = [a for a in arrivals if a.task_id not in proven]
    counts = count_arrivals(to_do, now, policy.start_lead_seconds,
                            None if backlog is None else backlog.sampled_at)
    decision = decide_on_counts(now, policy, backlog=backlog, counts=counts,
                                running=running, launches=launches, finished=finished)
    return replace(decision, proven=proven)


def decide_on_counts(
    now: float,
    policy: Policy,
    *,
    backlog: BacklogSample | None,
    counts: ArrivalCounts,
    running: Sequence[RunningExecution],
    launches: Sequence[Launch],
    finished: Sequence[FinishedExecution] = (),
) -> Decision:
    """``decide`` on the counts of the arrivals still to do (the proven ones left out)."""
    last = max(launches, key=lambda launch: launch.launched_at, default=None)
    newest_finish = max((f.finished_at for f in finished), default=-math.inf)
    fresh_metric = backlog is not None and backlog.sampled_at >= newest_finish and (
        last is None or backlog.sampled_at >= last.launched_at + policy.metric_settle_seconds
    )
    if fresh_metric:
        assert backlog is not None
        waiting = (max(0, backlog.undelivered - counts.delayed_in_sample)
                   + counts.ready_after_sample)
        basis = "metric"
    else:
        waiting = counts.ready
        basis = "arrivals"

    executions = active_executions(now, policy, running, finished, launches)
    running_tasks = sum(e.active_tasks for e in executions)
    covered = sum(e.active_tasks * policy.messages_per_task for e in executions)

    def result(reason: Reason, task_count: int = 0, check_at: float | None = None) -> Decision:
        checks = [t for t in (check_at, counts.next_ready_at) if t is not None]
        return Decision(reason=reason, task_count=task_count, waiting=waiting, basis=basis,
                        covered=min(covered, waiting), running_tasks=running_tasks,
                        delayed=counts.delayed, next_check_at=min(checks, default=None))

    uncovered = waiting - covered
    if waiting == 0:
        return result(Reason.NOTHING_WAITING)
    # While executions run (those of this launch too), look again a window later: they may
    # stop (runtime budget) with work left, and no wake-up would come for messages that were
    # already there.
    recheck = now + policy.decision_window_seconds
    if uncovered <= 0:
        return result(Reason.COVERED, check_at=recheck)
    if running_tasks >= policy.max_tasks:
        return result(Reason.AT_MAXIMUM, check_at=recheck)
    # The window spaces launches while the last one's effect is unknown; once its runner
    # says it finished, the facts say the rest and a request waits for no timer.
    # (A launch listed once and no longer listed has finished too.)
    if (last is not None and not _finished(last, running, finished)
            and now - last.launched_at < policy.decision_window_seconds):
        return result(Reason.DECISION_WINDOW,
                      check_at=last.launched_at + policy.decision_window_seconds)
    tasks = min(math.ceil(uncovered / policy.messages_per_task),
                policy.max_tasks - running_tasks)
    return result(Reason.BACKLOG, task_count=tasks, check_at=recheck)


def active_executions(
    now: float, policy: Policy, running: Sequence[RunningExecution],
    finished: Sequence[FinishedExecution], launches: Sequence[Launch],
) -> list[RunningExecution]:
    """The listed running executions, plus launches the runner has never listed, for at most
    ``launch_visibility_seconds`` (the Run API lists a new execution a moment later)."""
    listed = {e.name for e in running} | {e.name for e in finished}
    unlisted = [
        RunningExecution(launch.name, launch.task_count, launch.task_count)
        for launch in launches
        if launch.name not in listed and not launch.seen
        and now - launch.launched_at < policy.launch_visibility_seconds
    ]
    return [*running, *unlisted]


def _finished(launch: Launch, running: Sequence[RunningExecution],
              finished: Sequence[FinishedExecution]) -> bool:
    if any(f.name == launch.name for f in finished):
        return True
    return launch.seen and all(e.name != launch.name for e in running)
