"""One dispatch decision end to end: read the runner's execution states and the Monitoring
sample, then, under the record's lock, decide and reserve the launch; launch with the lock
released; name the reserved launch; log the decision as one JSON line with what it used.

No lock is held across a network call: a Run API or Monitoring call can take up to
``DISPATCH_API_ATTEMPTS`` x 20 s, and every wake-up of every dispatcher would wait behind it.
The reservation (a launch named ``pending-...`` in the record until the Run API answers) is
what keeps a racing decision from starting a second execution for the same backlog: it
counts as running, unseen, like any launch the runner has not listed yet.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from vividly_tasks.dispatch.decision import (
    ArrivalCounts,
    Decision,
    count_limit,
    decide_on_counts,
    idle_exit_proof,
    metric_proof,
)
from vividly_tasks.dispatch.errors import DispatchConfigError
from vividly_tasks.dispatch.inputs import (
    Arrival,
    BacklogSample,
    ExecutionStates,
    Launch,
    Policy,
    as_json,
)
from vividly_tasks.dispatch.record import DatabaseRecord, FileRecord, Record
from vividly_tasks.dispatch.settings import DispatchSettings

logger = logging.getLogger(__name__)
# Each decision is the line operators read and alert on: keep it even at LOG_LEVEL=WARNING.
logger.setLevel(logging.INFO)

#: Launches and arrivals are forgotten after this long (Monitoring has long caught up).
RECORD_RETENTION_SECONDS = 3600.0


class Launcher(Protocol):
    """What starts executions: Cloud Run (``cloud_run.CloudRunJob``) or local processes."""

    def executions(self) -> ExecutionStates:
        """The job's executions: running (with active tasks) and finished (with when)."""

    def launch(self, task_count: int) -> str:
        """Start one execution of ``task_count`` tasks; its name."""


class BacklogSource(Protocol):
    def read(self) -> BacklogSample | None:
        """The newest backlog sample, or None when there is none."""


def job_idle_timeout(settings: DispatchSettings) -> float:
    """What a job task waits before its idle exit, as the dispatcher must assume it."""
    if settings.dispatch_job_idle_timeout_seconds is not None:
        return settings.dispatch_job_idle_timeout_seconds
    return settings.worker_idle_timeout


def check_start_lead(settings: DispatchSettings) -> None:
    """An execution started ``DISPATCH_START_LEAD_SECONDS`` before a delayed task is due
    receives it, holds it, and exits idle ``WORKER_IDLE_TIMEOUT`` after receiving it: with a
    lead longer than that, it hands the task back before it is due, every time."""
    lead = settings.dispatch_start_lead_seconds
    idle = job_idle_timeout(settings)
    if lead > idle:
        raise DispatchConfigError(
            f"DISPATCH_START_LEAD_SECONDS ({lead:g}) is longer than the job's idle exit "
            f"({idle:g} s, DISPATCH_JOB_IDLE_TIMEOUT_SECONDS or WORKER_IDLE_TIMEOUT): an "
            "execution started for a delayed task would exit before the task is due; lower "
            "the lead or raise the job's WORKER_IDLE_TIMEOUT"
        )


def policy_from_settings(settings: DispatchSettings) -> Policy:
    return Policy(
        messages_per_task=settings.dispatch_messages_per_task,
        max_tasks=settings.dispatch_max_tasks,
        decision_window_seconds=settings.dispatch_decision_window_seconds,
        metric_settle_seconds=settings.dispatch_metric_settle_seconds,
        launch_visibility_seconds=settings.dispatch_launch_visibility_seconds,
        start_lead_seconds=settings.dispatch_start_lead_seconds,
        job_idle_timeout_seconds=job_idle_timeout(settings),
        job_max_runtime_seconds=settings.worker_max_runtime,
    )


class Dispatcher:
    """Decides, and launches, for one job; safe to call from many threads and processes."""

    def __init__(self, *, policy: Policy, launcher: Launcher, backlog: BacklogSource | None,
                 record: Record, clock: Callable[[], float] = time.time,
                 max_delay_seconds: float = math.inf) -> None:
        self.policy = policy
        self.launcher = launcher
        self.backlog = backlog
        self.record = record
        self.clock = clock
        #: How far an arrival's eta may lie after its publish time (DISPATCH_MAX_DELAY_SECONDS).
        self.max_delay_seconds = max_delay_seconds

    def note_arrival(self, arrival: Arrival) -> None:
        """Remember a wake-up's arrival (decided on later, after the gather), bounded: a
        publish time in the future is now, and an eta beyond ``max_delay_seconds`` after
        it is due then, so no body keeps an arrival in the record for longer. One row
        written, without the decision's lock."""
        now = self.clock()
        published = min(arrival.published_at, now)
        due = arrival.due_at
        if due is not None:
            due = min(due, published + self.max_delay_seconds)
        self.record.add_arrival(Arrival(arrival.task_id, published, due))

    def decide_once(self, *, dry_run: bool = False, trigger: str = "check") -> dict[str, Any]:
        """Decide now and (unless ``dry_run``) act; returns the logged record."""
        # The network calls first, without the lock. A launch made by another dispatcher
        # meanwhile is in the record (reserved or named) and counts as running unseen.
        backlog = self.backlog.read() if self.backlog is not None else None
        states = self.launcher.executions()
        policy = self.policy
        by_exit = idle_exit_proof(policy, states.finished)
        by_metric = metric_proof(backlog)
        reservation = None
        with self.record.locked(self.clock()) as locked:
            now = self.clock()
            # Older launches count for nothing but being the last one (decision step 3).
            since = now - max(policy.launch_visibility_seconds, policy.decision_window_seconds)
            launches = locked.recent_launches(since)
            newly_seen = {x.name for x in launches if not x.seen} & states.names
            locked.mark_seen(newly_seen)
            launches = [replace(x, seen=True) if x.name in newly_seen else x
                        for x in launches]
            # Dry run or not, what the facts prove done is done: nothing to remember it for.
            proven = locked.forget_proven(idle_exit_proof=by_exit, metric_proof=by_metric)
            counts = locked.counts(
                now, policy.start_lead_seconds, None if backlog is None else backlog.sampled_at,
                undelivered=None if backlog is None else backlog.undelivered,
                limit=count_limit(policy, states.running, launches))
            decision = decide_on_counts(now, policy, backlog=backlog, counts=counts,
                                        running=states.running, finished=states.finished,
                                        launches=launches)
            if decision.launch and not dry_run:
                reservation = Launch(f"pending-{uuid.uuid4().hex}", now, decision.task_count,
                                     decision.sized_for)
                locked.add_launch(reservation)
                launches.append(reservation)
        execution = None
        if reservation is not None:
            execution = self._launch(reservation)
            launches = [replace(x, name=execution) if x == reservation else x
                        for x in launches]
        record = decision_record(
            decision, now=now, dry_run=dry_run, trigger=trigger, execution=execution,
            backlog=backlog, counts=counts, proven=proven, states=states, launches=launches,
            policy=policy,
            arrivals=self.record.arrivals() if dry_run else None,
        )
        action = ("would launch" if dry_run else "launched") if decision.launch else "no launch"
        logger.info("dispatch: %s (%s, %d task(s))", action, decision.reason,
                    decision.task_count, extra=record)
        return record

    def _launch(self, reservation: Launch) -> str:
        """Start the reserved execution, then name it in the record (or, when the launch
        failed, drop the reservation so it holds back no other decision)."""
        try:
            name = self.launcher.launch(reservation.task_count)
        except BaseException:
            self.record.drop_launch(reservation.name)
            raise
        self.record.name_launch(reservation.name, name)
        return name


def decision_record(
    decision: Decision, *, now: float, dry_run: bool, trigger: str, execution: str | None,
    backlog: BacklogSample | None, counts: ArrivalCounts, proven: int,
    states: ExecutionStates, launches: list[Launch], policy: Policy,
    arrivals: list[Arrival] | None = None,
) -> dict[str, Any]:
    """The decision's JSON line: the outcome, the figures and the inputs (the arrivals as
    counts, unless ``arrivals`` are given: a burst would make the line thousands of entries
    long)."""
    return {
        "event": "dispatch_decision",
        "trigger": trigger,
        "dry_run": dry_run,
        "action": "launch" if decision.launch else "none",
        "reason": str(decision.reason),
        "task_count": decision.task_count,
        "execution": execution,
        "waiting": decision.waiting,
        "basis": decision.basis,
        "covered": decision.covered,
        "running_tasks": decision.running_tasks,
        "delayed": decision.delayed,
        "proven_done": proven,
        "next_check_at": decision.next_check_at,
        "decided_at": now,
        "dispatcher_pid": os.getpid(),
        "inputs": {
            "backlog": as_json(backlog),
            "arrivals": as_json(arrivals) if arrivals is not None else {
                # Each count stops at the limit: the decision is the same beyond it.
                "known": counts.ready + counts.delayed, "delayed": counts.delayed,
                "count_limit": counts.limit,
                "next_ready_at": counts.next_ready_at,
            },
            "running": as_json(states.running),
            # The newest few: Cloud Run lists every execution the job kept.
            "finished": as_json(sorted(states.finished, key=lambda f: f.finished_at)[-5:]),
            "launches": as_json(launches),
            "policy": as_json(policy),
        },
    }


def build_dispatcher(settings: DispatchSettings, *, launcher: Launcher | None = None) -> Dispatcher:
    """The dispatcher the settings describe (``DISPATCH_*``)."""
    from vividly_tasks.dispatch.local_runner import LocalRunner  # noqa: PLC0415

    check_start_lead(settings)
    project = settings.effective_project
    if launcher is None:
        if settings.dispatch_runner == "local":
            launcher = LocalRunner(log_dir=settings.effective_dispatch_record_path.parent
                                   / "workers", env=dict(os.environ))
        else:
            launcher = _cloud_run_job(settings, project)
    backlog = None
    # Monitoring has nothing to say about the emulator's subscriptions: arrivals only there.
    if project and (settings.dispatch_monitoring_endpoint or not settings.pubsub_emulator_host):
        from vividly_tasks.dispatch.monitoring import BacklogReader  # noqa: PLC0415

        backlog = BacklogReader(project=project,
                                subscription=settings.dispatch_subscriptions,
                                endpoint=settings.dispatch_monitoring_endpoint,
                                attempts=settings.dispatch_api_attempts)
    record: Record
    max_delay = settings.dispatch_max_delay_seconds
    if settings.dispatch_record == "database":
        record = DatabaseRecord(settings.effective_database_url, settings.dispatch_job,
                                retention_seconds=RECORD_RETENTION_SECONDS)
    else:
        record = FileRecord(settings.effective_dispatch_record_path, key=settings.dispatch_job,
                            retention_seconds=RECORD_RETENTION_SECONDS)
    return Dispatcher(policy=policy_from_settings(settings), launcher=launcher,
                      backlog=backlog, record=record, max_delay_seconds=max_delay)


def _cloud_run_job(settings: DispatchSettings, project: str | None) -> Launcher:
    from vividly_tasks.dispatch.cloud_run import CloudRunJob  # noqa: PLC0415

    missing = [name for name, value in (("GOOGLE_CLOUD_PROJECT (or BROKER_URL=pubsub://PROJECT)",
                                         project),
                                        ("DISPATCH_REGION", settings.dispatch_region))
               if not value]
    if missing:
        raise DispatchConfigError(
            f"DISPATCH_RUNNER=cloud-run needs {' and '.join(missing)}"
        )
    assert project is not None and settings.dispatch_region is not None
    return CloudRunJob(project=project, region=settings.dispatch_region,
                       job=settings.dispatch_job, endpoint=settings.dispatch_run_endpoint,
                       attempts=settings.dispatch_api_attempts)
