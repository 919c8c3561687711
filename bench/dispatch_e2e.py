"""The dispatcher end to end: ``vividly dispatch serve`` woken by the emulator's real pushes,
the local runner starting real ``vividly-worker job`` processes, an operator's day in phases.

1. **Trickle** for ``--minutes``: a request every 10-90 s (``--quick``: 10-30 s), so each
   mostly finds nothing running; with it, delayed tasks due in 1-5 minutes (``--quick``:
   1-2): four sent at the start, and one a second after every fifth request, which the
   execution started for that request receives and hands back at its idle exit; and two
   poison messages (not task messages) on the queue.
2. **Burst of 60**, then, once drained, a **burst of 300** during which three delayed tasks
   due in 45-75 s are sent (a running execution receives them and hands them back at its idle
   exit) and the dispatcher is killed (SIGKILL) half-way and restarted 2 s later on its port.
3. **Two dispatchers**: a second ``vividly dispatch serve`` with a wake-up subscription of its
   own (so both are woken by every task and decide on it at once) sharing the first one's
   record and runner; a burst of 60, then a short trickle with two delayed tasks.

It reports executions started, executions that received no message, submit -> task start
(p50 / p95; the trickle alone too), delayed task start vs due (max), the delayed tasks the
workers handed back (their summaries' ``released_delayed``), tasks per burst vs
ceil(N / DISPATCH_MESSAGES_PER_TASK) (capped by DISPATCH_MAX_TASKS) and the time from the
burst's last arrival to reaching it, tasks lost and tasks run twice, and the machine's load
(``uptime``) before and after; one JSON object.

    .venv/bin/python -m bench.dispatch_e2e --quick          # ~9 min
    .venv/bin/python -m bench.dispatch_e2e --minutes 20     # the full trickle, ~33 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from google.cloud import pubsub_v1

from harness.dispatch import DispatchServe, free_port
from harness.services import start_pubsub_emulator
from vividly_tasks.dispatch.local_runner import LocalRunner
from vividly_tasks.lessons.product import create_app
from vividly_tasks.lessons.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
QUEUE_TOPIC = "vividly-vividly"
MESSAGES_PER_TASK = 20
MAX_TASKS = 20
IDLE_TIMEOUT_SECONDS = 10
TASK = "bench.dispatch_stamp"


class Dispatcher:
    """``vividly dispatch serve`` (harness.dispatch.DispatchServe) on a fixed loopback port,
    restartable after a kill."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.serve: DispatchServe | None = None

    def start(self) -> None:
        self.serve = DispatchServe(self.env, self.log_path, port=self.port, ready_seconds=60)

    def kill(self) -> None:
        assert self.serve is not None
        self.serve.process.kill()
        self.serve.process.wait()

    def stop(self) -> None:
        if self.serve is not None:
            self.serve.stop()

    def decisions(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{") and '"dispatch_decision"' in line:
                records.append(json.loads(line))
        return records


class Bench:
    def __init__(self, env: dict[str, str], workdir: Path, rng: random.Random) -> None:
        self.env = env
        self.rng = rng
        self.ledger = Path(env["DISPATCH_E2E_LEDGER"])
        self.workers = workdir / "dispatch" / "workers"
        #: token -> (kind, submitted at, due at or None, phase)
        self.sent: dict[str, tuple[str, float, float | None, str]] = {}
        self.burst_windows: list[dict[str, Any]] = []
        self.app = create_app(Settings())

    def submit(self, phase: str, *, countdown: float | None = None,
               work_seconds: float = 0.2) -> None:
        token = uuid.uuid4().hex
        now = time.time()
        due = None if countdown is None else now + countdown
        self.sent[token] = ("delayed" if countdown else "now", now, due, phase)
        self.app.send_task(TASK, (token, work_seconds), countdown=countdown)

    def runs(self) -> list[dict[str, Any]]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines() if line]

    def wait_ran(self, tokens: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tokens <= {r["token"] for r in self.runs()}:
                return
            time.sleep(0.5)

    def wait_quiet(self, timeout: float) -> None:
        """Until no worker process runs (each phase starts on an idle job)."""
        runner = LocalRunner(log_dir=self.workers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and runner.executions().running:
            time.sleep(0.5)

    def trickle(self, minutes: float, gap: tuple[float, float],
                delayed_due: tuple[float, float], *, phase: str = "trickle") -> None:
        """A request every ``gap`` seconds; a second after every fifth, a delayed task that
        the execution started for the request receives and hands back at its idle exit."""
        end = time.monotonic() + minutes * 60
        number = 0
        while True:
            pause = self.rng.uniform(*gap)
            if time.monotonic() + pause > end:
                break
            time.sleep(pause)
            self.submit(phase)
            number += 1
            if number % 5 == 0:
                time.sleep(1.0)
                self.submit(f"{phase}-delayed", countdown=self.rng.uniform(*delayed_due))

    def burst(self, size: int, dispatcher: Dispatcher | None = None,
              label: str | None = None) -> None:
        started = time.time()
        tokens_before = set(self.sent)
        for number in range(size):
            if dispatcher is not None and number == size // 2:
                dispatcher.kill()  # mid-burst; Pub/Sub retries the refused pushes
                threading.Timer(2.0, dispatcher.start).start()
            if dispatcher is not None and number in (size // 4, size // 2 + 1, 3 * size // 4):
                self.submit(f"burst-{size}-delayed", countdown=self.rng.uniform(45, 75))
            self.submit(f"burst-{size}", work_seconds=0.5)
        last = time.time()
        tokens = {t for t in self.sent if t not in tokens_before
                  and self.sent[t][3] == f"burst-{size}"}
        self.burst_windows.append({"size": size, "label": label or f"burst of {size}",
                                   "started": started, "last_arrival": last})
        self.wait_ran(tokens, 300)
        self.burst_windows[-1]["drained"] = time.time()


def publish_poison(project: str, count: int) -> None:
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, QUEUE_TOPIC)
    for number in range(count):
        publisher.publish(topic, f"not a task message {number}".encode()).result(timeout=30)


def worker_summaries(folder: Path) -> list[dict[str, Any]]:
    summaries = []
    for log in sorted(folder.glob("local-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"worker_summary"' in line:
                summaries.append(json.loads(line))
    return summaries


def load() -> dict[str, Any]:
    """The machine's load as ``uptime`` prints it (other work shares the cores)."""
    text = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {"uptime": text.strip(), "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count()}


def phase_of(decided_at: float, phases: list[tuple[str, float]]) -> str:
    name = phases[0][0]
    for phase, began in phases:
        if decided_at >= began:
            name = phase
    return name


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(len(ordered) * fraction) - 1)], 2)


def report(bench: Bench, decisions: list[dict[str, Any]], args: argparse.Namespace,
           wall_seconds: float, phases: list[tuple[str, float]]) -> dict[str, Any]:
    runs = bench.runs()
    starts: dict[str, list[float]] = {}
    for run in runs:
        starts.setdefault(run["token"], []).append(run["started_at"])
    lost = [t for t in bench.sent if t not in starts]
    twice = [t for t, s in starts.items() if len(s) > 1]
    latency = {"all": [], "trickle": []}  # type: dict[str, list[float]]
    late = []
    for token, (kind, submitted, due, phase) in bench.sent.items():
        if token not in starts:
            continue
        first = min(starts[token])
        if kind == "delayed":
            assert due is not None
            late.append(first - due)
        else:
            latency["all"].append(first - submitted)
            if phase.startswith("trickle"):
                latency["trickle"].append(first - submitted)
    summaries = worker_summaries(bench.workers)
    received: Counter[str] = Counter()
    for summary in summaries:
        received[str(summary.get("cloud_run_execution"))] += int(summary.get("received", 0))
    launches = [d for d in decisions if d["action"] == "launch"]
    executions = {str(d["execution"]) for d in launches}
    per_phase: dict[str, dict[str, int]] = {}
    for launch in launches:
        counts = per_phase.setdefault(phase_of(launch["decided_at"], phases),
                                      {"executions": 0, "tasks": 0, "with_no_message": 0})
        counts["executions"] += 1
        counts["tasks"] += int(launch["task_count"])
        counts["with_no_message"] += received[str(launch["execution"])] == 0
    bursts = []
    for window in bench.burst_windows:
        target = min(math.ceil(window["size"] / MESSAGES_PER_TASK), MAX_TASKS)
        total, reached = 0, None
        for launch in sorted(launches, key=lambda d: d["decided_at"]):
            if window["started"] - 1 <= launch["decided_at"] <= window.get("drained", math.inf):
                total += int(launch["task_count"])
                if reached is None and total >= target:
                    reached = launch["decided_at"]
        bursts.append({
            "burst": window["label"],
            "size": window["size"], "target_tasks": target, "tasks_started": total,
            "seconds_from_last_arrival_to_target": (
                None if reached is None else round(reached - window["last_arrival"], 1)),
            "seconds_to_drain_after_last_arrival": round(
                window.get("drained", math.nan) - window["last_arrival"], 1),
        })
    return {
        "mode": "quick" if args.quick else "full", "trickle_minutes": args.minutes,
        "wall_seconds": round(wall_seconds), "tasks_sent": len(bench.sent),
        "poison_messages": 2,
        "executions_started": len(executions),
        "executions_with_no_message": sorted(e for e in executions if received[e] == 0),
        "by_phase": per_phase,
        "submit_to_start_seconds": {
            "p50": percentile(latency["all"], 0.5), "p95": percentile(latency["all"], 0.95),
            "trickle_p50": percentile(latency["trickle"], 0.5),
            "trickle_p95": percentile(latency["trickle"], 0.95),
            "trickle_samples": len(latency["trickle"]),
            "max": percentile(latency["all"], 1.0)},
        "delayed_start_after_due_seconds": {
            "max": percentile(late, 1.0), "min": percentile(late, 0.0) if late else None,
            "samples": len(late)},
        # Given back unstarted at an idle exit by an execution that ran before they were due.
        "delayed_handed_back": {
            "releases": sum(int(s.get("released_delayed") or 0) for s in summaries),
            "by_executions": len({s.get("cloud_run_execution") for s in summaries
                                  if s.get("released_delayed")})},
        "bursts": bursts,
        "lost": len(lost), "run_twice": len(twice),
        "worker_exit_codes": dict(Counter(s.get("exit_code") for s in summaries)),
        "decisions": len(decisions),
        "decisions_by_dispatcher_pid": dict(Counter(str(d.get("dispatcher_pid"))
                                                     for d in decisions)),
    }


def run_phases(bench: Bench, args: argparse.Namespace, project: str,
               dispatchers: list[Dispatcher]) -> list[tuple[str, float]]:
    """The day's phases (see the module docstring); when each began."""
    subscriber = pubsub_v1.SubscriberClient()

    def wake_up(name: str, target: Dispatcher) -> None:
        subscriber.create_subscription(request={
            "name": subscriber.subscription_path(project, name),
            "topic": f"projects/{project}/topics/{QUEUE_TOPIC}",
            "push_config": {"push_endpoint": f"{target.url}/push"},
        })

    gap = (10.0, 30.0) if args.quick else (10.0, 90.0)
    delayed_due = (60.0, 120.0) if args.quick else (60.0, 300.0)
    first = dispatchers[0]
    wake_up("vividly-wake-up", first)
    phases = [("trickle", time.time())]
    for _ in range(4):
        bench.submit("trickle-delayed", countdown=bench.rng.uniform(*delayed_due))
    threading.Timer(20.0, publish_poison, args=(project, 2)).start()
    bench.trickle(args.minutes, gap, delayed_due)
    bench.wait_ran(set(bench.sent), delayed_due[1] + 60)
    bench.wait_quiet(120)
    phases.append(("burst of 60", time.time()))
    bench.burst(60)
    bench.wait_quiet(120)
    phases.append(("burst of 300, dispatcher killed", time.time()))
    bench.burst(300, first)
    bench.wait_ran(set(bench.sent), 150)
    bench.wait_quiet(120)
    # The second dispatcher: its own wake-up subscription, the same record and runner.
    second = Dispatcher({**bench.env, "DISPATCH_WAKE_UP_SUBSCRIPTION": "vividly-wake-up-2"},
                        first.log_path.with_name("dispatch-2.log"))
    dispatchers.append(second)
    second.start()
    wake_up("vividly-wake-up-2", second)
    phases.append(("two dispatchers", time.time()))
    bench.burst(60, label="burst of 60, two dispatchers")
    bench.wait_quiet(120)
    bench.trickle(1.0 if args.quick else 3.0, (10.0, 30.0), (45.0, 75.0),
                  phase="trickle-two-dispatchers")
    bench.submit("trickle-two-dispatchers-delayed", countdown=45)
    bench.wait_ran(set(bench.sent), 150)
    bench.wait_quiet(120)
    subscriber.close()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="the trickle's length")
    parser.add_argument("--quick", action="store_true",
                        help="a 2-minute trickle of a request every 10-30 s, delayed tasks "
                        "due in 1-2 minutes")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", type=Path,
                        help="copy the logs (dispatchers', workers', ledger) into this folder")
    args = parser.parse_args()
    if args.quick:
        args.minutes = min(args.minutes, 2.0)
    rng = random.Random(6)  # noqa: S311 - a repeatable schedule, not a secret
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="dispatch-e2e-") as folder:
        workdir = Path(folder)
        emulator = start_pubsub_emulator(workdir)
        dispatchers: list[Dispatcher] = []
        try:
            project = f"dispatch-e2e-{uuid.uuid4().hex[:8]}"
            env = {**os.environ,
                   "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{emulator.port}",
                   "BROKER_URL": f"pubsub://{project}", "VIVIDLY_DATA_DIR": folder,
                   "DISPATCH_RUNNER": "local", "DISPATCH_PUSH_AUTH": "none",
                   "DISPATCH_MESSAGES_PER_TASK": str(MESSAGES_PER_TASK),
                   "DISPATCH_MAX_TASKS": str(MAX_TASKS),
                   "WORKER_IDLE_TIMEOUT": str(IDLE_TIMEOUT_SECONDS),
                   "WORKER_CONCURRENCY": "1",
                   "WORKER_APP": "bench.dispatch_e2e_app:app",
                   "DISPATCH_E2E_LEDGER": str(workdir / "ledger.jsonl"),
                   "PYTHONPATH": str(REPO_ROOT)}
            os.environ.update(env)
            subprocess.run([sys.executable, "-m", "vividly_tasks.cli", "provision"],
                           env=env, cwd=REPO_ROOT, check=True, capture_output=True)
            dispatchers.append(Dispatcher(env, workdir / "dispatch.log"))
            dispatchers[0].start()
            bench = Bench(env, workdir, rng)
            began = time.time()
            phases = run_phases(bench, args, project, dispatchers)
            decisions = sorted((d for each in dispatchers for d in each.decisions()),
                               key=lambda d: d["decided_at"])
            result = report(bench, decisions, args, time.time() - began, phases)
        finally:
            for each in dispatchers:
                each.stop()
            LocalRunner(log_dir=workdir / "dispatch" / "workers").wait(30)
            emulator.stop()
            if args.keep is not None:
                shutil.copytree(workdir, args.keep, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.sqlite*", "emulator*"))
    result["load_before"], result["load_after"] = load_before, load()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
