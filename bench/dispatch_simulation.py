"""What the dispatcher changes: a day of arrivals replayed through the real decision code.

Three arrival patterns (an idle day; a trickle, one request every 10 minutes; a burst, 5,000
requests at once) go through two ways of starting the Cloud Run job, second by second:

- **schedule**: the documented fixed schedule, an execution of 4 tasks every 5 minutes;
- **dispatch**: ``vividly_tasks.dispatch.decision.decide`` with the default ``DISPATCH_*``
  settings, woken by each arrival (after the gather), at the ``next_check_at`` it asks for,
  and by the 10-minute safety net; Cloud Monitoring's backlog is sampled every minute and
  shown ``--metric-lag`` seconds later, as it is. The wake-ups reach it at most
  ``--push-rate`` a second (push concurrency: a burst is seen over seconds, not at once),
  so a burst's launches grow as its arrivals are seen.

The job's tasks are modelled, not run: an execution starts ``--schedule-delay`` s after it is
asked for (Cloud Run places it; not billed), a task's worker is up ``--start`` s later, takes
one message at a time for ``--service`` s each, exits after ``--idle-timeout`` s without
work or at the 540 s runtime budget, and is billed one vCPU from its start to its exit.
Latency is submit -> start of the message's processing. Not a timed test:

    .venv/bin/python -m bench.dispatch_simulation [--service 10] [--output docs/cloud-run.md]

With ``--output`` the table replaces the one between the markers in that file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from vividly_tasks.dispatch.decision import decide
from vividly_tasks.dispatch.dispatcher import policy_from_settings
from vividly_tasks.dispatch.inputs import (
    Arrival,
    BacklogSample,
    FinishedExecution,
    Launch,
    RunningExecution,
)
from vividly_tasks.dispatch.settings import DispatchSettings

REPO_ROOT = Path(__file__).resolve().parent.parent

DAY_SECONDS = 86_400
MAX_RUNTIME_SECONDS = 540
SAFETY_NET_SECONDS = 600
SCHEDULE_EVERY_SECONDS = 300
SCHEDULE_TASKS = 4
MONITORING_PERIOD_SECONDS = 60
#: Wake-ups a second: bench/dispatch_e2e.py's bursts on the emulator (2 pushes in flight)
#: were seen by the dispatcher at about this pace.
PUSH_RATE = 60.0
BEGIN = "<!-- dispatch-simulation:begin -->"
END = "<!-- dispatch-simulation:end -->"


@dataclass
class Model:
    service_seconds: float
    start_seconds: float
    schedule_delay_seconds: float
    idle_timeout_seconds: float
    metric_lag_seconds: float
    #: Wake-ups delivered a second at most (what push concurrency lets through).
    push_rate: float = math.inf


@dataclass
class Task:
    up_at: float
    ends_by: float
    #: When the message in hand is done; None when the task has none.
    done_at: float | None = None
    last_work: float = 0.0
    exited_at: float | None = None


@dataclass
class Execution:
    name: str
    tasks: list[Task]

    @property
    def active(self) -> int:
        return sum(1 for task in self.tasks if task.exited_at is None)


@dataclass
class Run:
    """One pattern through one way of starting: the figures it ends with."""

    model: Model
    queue: deque[tuple[int, float]] = field(default_factory=deque)  # (id, submitted at)
    executions: list[Execution] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    vcpu_seconds: float = 0.0
    in_flight: int = 0

    def launch(self, now: float, task_count: int) -> str:
        up = now + self.model.schedule_delay_seconds + self.model.start_seconds
        tasks = [Task(up_at=up, ends_by=up + MAX_RUNTIME_SECONDS, last_work=up)
                 for _ in range(task_count)]
        name = f"execution-{len(self.executions) + 1}"
        self.executions.append(Execution(name, tasks))
        return name

    def step(self, now: float) -> None:
        """One second of every task: finish, take the next message, or idle out."""
        for execution in self.executions:
            for task in execution.tasks:
                if task.exited_at is not None or now < task.up_at:
                    continue
                if task.done_at is not None:
                    if now < task.done_at:
                        continue
                    self.in_flight -= 1
                    task.last_work, task.done_at = task.done_at, None
                if self.queue and now < task.ends_by:
                    _, submitted = self.queue.popleft()
                    self.latencies.append(now - submitted)
                    task.done_at = now + self.model.service_seconds
                    self.in_flight += 1
                elif now >= task.ends_by or now - task.last_work >= \
                        self.model.idle_timeout_seconds:
                    task.exited_at = now
                    # Billed from the container's start (start-up included) to its exit.
                    self.vcpu_seconds += now - (task.up_at - self.model.start_seconds)

    def running(self) -> list[RunningExecution]:
        return [RunningExecution(e.name, len(e.tasks), e.active)
                for e in self.executions if e.active]

    def finished(self, since: float) -> list[FinishedExecution]:
        """What the Run API lists as completed (the last hour's): when each last task exited."""
        done = []
        for e in self.executions:
            exits = [t.exited_at for t in e.tasks]
            if e.active or any(x is None for x in exits):
                continue
            end = max(x for x in exits if x is not None)
            if end >= since:
                started = min(t.up_at for t in e.tasks) - self.model.start_seconds
                done.append(FinishedExecution(e.name, end, succeeded=True, started_at=started))
        return done

    def backlog(self) -> int:
        """What ``num_undelivered_messages`` counts: queued plus leased, unacked."""
        return len(self.queue) + self.in_flight


def arrivals_of(pattern: str) -> list[float]:
    if pattern == "idle day":
        return []
    if pattern == "trickle":  # one in each 10 minutes, at a point the schedule cannot know
        rng = random.Random(17)  # noqa: S311 - a repeatable spread, not a secret
        return [slot + rng.uniform(0, 600) for slot in range(0, DAY_SECONDS, 600)]
    return [3600.0] * 5000  # burst


def pushed_at(submits: list[float], rate: float) -> list[float]:
    """When each wake-up reaches the dispatcher: in order, at most ``rate`` a second."""
    seen: list[float] = []
    for submitted in submits:
        seen.append(max(submitted, seen[-1] + 1 / rate) if seen else submitted)
    return seen


def simulate(pattern: str, mode: str, model: Model, settings: DispatchSettings,
             label: str) -> dict[str, object]:
    run = Run(model)
    submits = sorted(arrivals_of(pattern))
    pushes = pushed_at(submits, model.push_rate)
    next_push = 0
    policy = policy_from_settings(settings)
    gather = settings.dispatch_gather_seconds
    arrivals: list[Arrival] = []
    launches: list[Launch] = []
    samples: list[tuple[float, int]] = []  # (taken at, value)
    decide_at: set[float] = set(range(SAFETY_NET_SECONDS, DAY_SECONDS, SAFETY_NET_SECONDS))
    next_submit = 0
    for second in range(DAY_SECONDS + 3600):  # an hour more, to finish the day's work
        now = float(second)
        while next_submit < len(submits) and submits[next_submit] <= now:
            run.queue.append((next_submit, submits[next_submit]))
            next_submit += 1
        while next_push < len(pushes) and pushes[next_push] <= now:
            arrivals.append(Arrival(str(next_push), submits[next_push]))
            decide_at.add(math.ceil(pushes[next_push] + gather))
            next_push += 1
        if second % MONITORING_PERIOD_SECONDS == 0:
            samples.append((now, run.backlog()))
        if mode == "schedule":
            if second % SCHEDULE_EVERY_SECONDS == 0 and second < DAY_SECONDS:
                run.launch(now, SCHEDULE_TASKS)
        elif second in decide_at:
            decide_at.discard(second)
            visible = [s for s in samples if s[0] + model.metric_lag_seconds <= now]
            backlog = (BacklogSample(visible[-1][1], 0.0, visible[-1][0]) if visible
                       else None)
            recent = [a for a in arrivals if a.published_at >= now - 3600]
            decision = decide(now, policy, backlog=backlog, arrivals=recent,
                              running=run.running(), launches=launches,
                              finished=run.finished(now - 3600))
            if decision.launch:
                name = run.launch(now, decision.task_count)
                launches.append(Launch(name, now, decision.task_count, decision.sized_for))
            if decision.next_check_at is not None:
                decide_at.add(math.ceil(decision.next_check_at))
        run.step(now)
    latencies = sorted(run.latencies)
    return {
        "pattern": pattern, "mode": label, "executions": len(run.executions),
        "vcpu_seconds": round(run.vcpu_seconds),
        "processed": len(latencies), "submitted": len(submits),
        "latency_median_s": round(statistics.median(latencies), 1) if latencies else None,
        "latency_max_s": round(latencies[-1], 1) if latencies else None,
    }


def table(results: list[dict[str, object]], model: Model) -> str:
    lines = [
        "| day | started by | executions | vCPU-seconds | submit -> start, median / max |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        latency = ("n/a" if r["latency_median_s"] is None
                   else f"{r['latency_median_s']} s / {r['latency_max_s']} s")
        by = r["mode"]
        lines.append(f"| {r['pattern']} | {by} | {r['executions']} | {r['vcpu_seconds']:,} "
                     f"| {latency} |")
    lines.append("")
    lines.append(
        f"Model (bench/dispatch_simulation.py): {model.service_seconds:g} s a request, "
        f"{model.start_seconds:g} s worker start-up (billed), "
        f"{model.schedule_delay_seconds:g} s for Cloud Run to place an execution (not billed), "
        f"`WORKER_IDLE_TIMEOUT` {model.idle_timeout_seconds:g} s, Monitoring "
        f"{model.metric_lag_seconds:g} s behind, wake-ups pushed at most "
        f"{model.push_rate:g} a second; default `DISPATCH_*` settings."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", type=float, default=10.0, help="seconds a request takes")
    parser.add_argument("--start", type=float, default=2.0, help="worker start-up, billed")
    parser.add_argument("--schedule-delay", type=float, default=10.0,
                        help="Cloud Run placing an execution, not billed")
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument("--metric-lag", type=float, default=120.0)
    parser.add_argument("--push-rate", type=float, default=PUSH_RATE,
                        help="wake-ups a second at most (push concurrency)")
    parser.add_argument("--output", type=Path, help="a Markdown file with the markers")
    args = parser.parse_args()
    model = Model(args.service, args.start, args.schedule_delay, args.idle_timeout,
                  args.metric_lag, args.push_rate)
    settings = DispatchSettings()
    wider = DispatchSettings(dispatch_max_tasks=100)
    schedule = "fixed schedule, 4 tasks every 5 min"
    dispatch = "`vividly dispatch`"
    results = []
    for pattern in ("idle day", "trickle", "burst"):
        results.append(simulate(pattern, "schedule", model, settings, schedule))
        results.append(simulate(pattern, "dispatch", model, settings, dispatch))
    results.append(simulate("burst", "dispatch", model, wider,
                            f"{dispatch}, `DISPATCH_MAX_TASKS=100`"))
    for result in results:
        print(json.dumps(result))
    rendered = table(results, model)
    print(rendered)
    if args.output:
        text = args.output.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        args.output.write_text(f"{head}{BEGIN}\n{rendered}\n{END}{tail}")


if __name__ == "__main__":
    main()
