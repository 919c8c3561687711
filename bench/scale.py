"""Memory and scale: 20,000 no-op tasks through one worker, over Pub/Sub and over Redis.

    .venv/bin/python -m bench.scale [--tasks 20000] [--rounds 3] [--brokers ours redis]
                                    [--no-bare] [--json PATH]

Each round publishes every broker's whole backlog first, from one producer per broker, in
alternating chunks (ours 1,000, Redis 1,000, ...: the machine's speed drifts over minutes, so
backlogs published one after the other were timed on different machines), then for each
broker in turn starts one Celery worker (prefork, ``--concurrency 2``, the app's settings:
acks late, prefetch 1, events on, results in Redis) and lets it drain. It records the summed
resident set (RSS) of the worker's process tree (main process and pool children, from /proc)
after every 1,000 tasks and once the backlog is drained, and the drain rate. No leak means:
RSS at the end within 10 % of RSS after the first 1,000 tasks. Not a test (it takes minutes);
``bench/all.py`` runs it for docs/benchmarks.md. Starts its own emulator (warmed up first, as
bench/transport.py does) and Redis on loopback, stopped by PID.

Rounds alternate the brokers on the same servers (ours, Redis, ours, ...), each with a fresh
worker and backlog, and the summary quotes medians: one run of a minute on a shared machine
moves by a third (the hypervisor's steal, printed per run, is part of why). Each run also
records the CPU per task of the worker's tree and of the broker's server (the emulator, or
redis-server), and, for ours, the rate of publishing the same backlog pipelined
(``publish_in_flight``) to a queue of its own, deleted before the drain. The bare-client row
(``--no-bare`` skips it) drains the same backlog with google-cloud-pubsub alone, two threads
that Pull one message and ack it, as the worker's two slots do: the emulator's own rate and
its CPU per message through the drain, without Celery or this transport.

Workers import this module (``--include bench.scale``) for its one task; the harness imports
stay inside the functions so that the worker pays nothing for them.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import functools
import os

import redis
from celery import shared_task

LEDGER_ENV = "SCALE_LEDGER_URL"
DONE_KEY = "scale:done"


@functools.cache
def _ledger_of(pid: int) -> redis.Redis:
    return redis.Redis.from_url(os.environ[LEDGER_ENV])


@shared_task(name="scale.noop", ignore_result=True)
def noop() -> None:
    """Counts itself, so the harness sees progress without reading results."""
    _ledger_of(os.getpid()).incr(DONE_KEY)


# ------------------------------------------------------------------------------------------
# The harness (runs only in the benchmark process).
# ------------------------------------------------------------------------------------------
import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
CHECKPOINT = 1000
LEAK_TOLERANCE = 0.10
#: Backlogs are published in alternating chunks of this many tasks per broker.
PUBLISH_CHUNK = 1000
STALL_SECONDS = 60.0
BROKERS = ("ours", "redis")
ASIDE_QUEUE = "scale-aside"
BARE_SLOTS = 2  # the worker's prefetch: --concurrency 2 x multiplier 1


@dataclass
class ScaleRun:
    broker: str
    tasks: int
    round: int = 1
    publish_rate: float = 0.0
    #: Ours only: the same number of tasks published with ``publish_in_flight``, timed until
    #: every one is confirmed (to a queue of its own, deleted before the drain).
    publish_pipelined_rate: float | None = None
    drain_rate: float = 0.0  # tasks/s, worker ready -> last task done
    steady_drain_rate: float = 0.0  # tasks/s, after the first checkpoint -> last task done
    rss_first_mib: float = 0.0  # after the first CHECKPOINT tasks
    rss_end_mib: float = 0.0  # once the backlog is drained
    rss_curve_mib: list[float] = field(default_factory=list)  # after each CHECKPOINT tasks
    #: Drain rate (tasks/s) over each CHECKPOINT tasks: whether the rate holds through the run.
    rate_curve: list[float] = field(default_factory=list)
    #: CPU milliseconds per task while the backlog drained: the worker's process tree, and
    #: the broker's server (the emulator's JVM, or redis-server, which also holds the ledger).
    worker_cpu_ms: float = 0.0
    server_cpu_ms: float = 0.0
    #: Share of the machine's CPU time taken by the hypervisor (steal) during the drain.
    steal_share: float = 0.0
    drained: int = 0
    failure: str | None = None

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_mib - self.rss_first_mib) / self.rss_first_mib

    @property
    def leak_free(self) -> bool:
        return self.failure is None and abs(self.rss_growth) <= LEAK_TOLERANCE


@dataclass
class BareDrain:
    """google-cloud-pubsub alone draining the same backlog (the emulator's own ceiling)."""

    tasks: int
    round: int = 1
    drain_rate: float = 0.0
    rate_curve: list[float] = field(default_factory=list)
    #: The emulator's CPU milliseconds per message over each CHECKPOINT messages.
    server_cpu_curve: list[float] = field(default_factory=list)
    failure: str | None = None


class MachineClock:
    """CPU ticks of some processes, and the machine's steal share, between two readings."""

    def __init__(self, pids: list[int]) -> None:
        from bench.transport import cpu_ticks

        self.pids = pids
        self.ticks = cpu_ticks(pids)
        self.machine = machine_ticks()

    def cpu_ms(self) -> float:
        from bench.transport import TICK_MS, cpu_ticks

        return (cpu_ticks(self.pids) - self.ticks) * TICK_MS

    def steal_share(self) -> float:
        now = machine_ticks()
        total = sum(now) - sum(self.machine)
        return (now[7] - self.machine[7]) / total if total else 0.0


def machine_ticks() -> list[int]:
    """The machine's CPU time counters (/proc/stat): user, nice, system, idle, ..., steal."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def tree_rss_mib(root: int) -> float:
    from bench.transport import process_tree

    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    return total / 1024


def make_app(env: dict[str, str], **transport_options: Any) -> Any:
    from vividly_tasks import create_app
    from vividly_tasks.lessons.settings import Settings

    app = create_app(Settings(broker_url=env["BROKER_URL"], result_backend=env["RESULT_BACKEND"],
                              data_dir=Path(env["VIVIDLY_DATA_DIR"]), log_format="text"))
    app.conf.broker_connection_timeout = 10
    if transport_options:
        app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                             **transport_options}
    return app


def run_broker(run: ScaleRun, env: dict[str, str], workdir: Path,
               server_pids: list[int]) -> ScaleRun:
    from harness.workers import WorkerProcess

    name = run.broker
    if run.failure is not None:  # its backlog could not be published
        return run
    ledger = redis.Redis.from_url(env[LEDGER_ENV])
    ledger.delete(DONE_KEY)
    worker = None
    try:
        if name == "ours":
            publish_pipelined(env, run)
        command = [sys.executable, "-m", "celery", "-A", "vividly_tasks", "worker",
                   "--include", "bench.scale", "--hostname", f"scale-{name}{run.round}@%h",
                   "--concurrency", "2", "--pool", "prefork", "--loglevel", "INFO"]
        log_path = workdir / f"worker-{name}-{run.round}.log"
        worker = WorkerProcess(command, env, log_path).start()
        drain(worker, ledger, run, server_pids)
    except Exception as exc:
        run.failure = f"{type(exc).__name__}: {exc}"[:500]
        run.drained = int(ledger.get(DONE_KEY) or 0)
        print(f"  {name}: failed: {run.failure}", flush=True)
    finally:
        if worker is not None:
            worker.stop()
        ledger.close()
    return run


def publish_backlogs(round_runs: list[tuple[ScaleRun, dict[str, str]]], first: int) -> None:
    """Every broker's whole backlog, before any worker starts, in alternating chunks of
    PUBLISH_CHUNK, the broker at index ``first`` (mod their number) first; a broker's rate is
    its tasks over the time its own chunks took."""
    from bench.transport import declare_task_queue, rotated

    round_runs = rotated(round_runs, first)
    apps = {run.broker: make_app(env) for run, env in round_runs}
    elapsed = dict.fromkeys(apps, 0.0)
    try:
        for start in range(0, round_runs[0][0].tasks, PUBLISH_CHUNK):
            for run, _ in round_runs:
                if run.failure is not None:
                    continue
                app = apps[run.broker]
                task = app.tasks["scale.noop"]
                count = min(PUBLISH_CHUNK, run.tasks - start)
                try:
                    if start == 0:  # a failure here, too, is this broker's, not the run's
                        declare_task_queue(app)
                    with app.producer_or_acquire() as producer:
                        started = time.perf_counter()
                        for _ in range(count):
                            task.apply_async(producer=producer)
                        elapsed[run.broker] += time.perf_counter() - started
                except Exception as exc:
                    run.failure = f"publish: {type(exc).__name__}: {exc}"[:500]
                    print(f"  {run.broker}: failed: {run.failure}", flush=True)
    finally:
        for app in apps.values():
            app.close()
    for run, _ in round_runs:
        if run.failure is None:
            run.publish_rate = run.tasks / elapsed[run.broker]
            print(f"  {run.broker}: published {run.tasks} at {run.publish_rate:,.0f}/s",
                  flush=True)


def publish_pipelined(env: dict[str, str], run: ScaleRun) -> None:
    """As many tasks again, pipelined, to a queue no worker reads; deleted afterwards so that
    the drain runs against the same emulator state as without this row."""
    from kombu import Exchange, Queue

    from bench.transport import PIPELINED_IN_FLIGHT  # the same bound as its pipelined rows

    app = make_app(env, publish_in_flight=PIPELINED_IN_FLIGHT)
    task = app.tasks["scale.noop"]
    aside = Queue(ASIDE_QUEUE, Exchange(ASIDE_QUEUE), ASIDE_QUEUE)
    try:
        with app.connection_for_write() as connection:
            aside(connection.default_channel).declare()
        task.apply_async(queue=ASIDE_QUEUE)  # connect and warm up outside the timing
        with app.producer_or_acquire() as producer:
            producer.channel.flush_publishes()
            started = time.perf_counter()
            for _ in range(run.tasks):
                task.apply_async(producer=producer, queue=ASIDE_QUEUE)
            producer.channel.flush_publishes()  # every one confirmed
            run.publish_pipelined_rate = run.tasks / (time.perf_counter() - started)
        with app.connection_for_write() as connection:
            aside(connection.default_channel).delete()
    finally:
        app.close()
    print(f"  {run.broker}: published {run.tasks} pipelined at "
          f"{run.publish_pipelined_rate:,.0f}/s", flush=True)


def checkpoint(run: ScaleRun, worker_pid: int, now: float, previous_at: float) -> float:
    """Record the worker tree's RSS and the rate over the last CHECKPOINT tasks; returns now."""
    run.rss_curve_mib.append(tree_rss_mib(worker_pid))
    run.rate_curve.append(round(CHECKPOINT / max(now - previous_at, 1e-6), 1))
    return now


def drain(worker: Any, ledger: redis.Redis, run: ScaleRun, server_pids: list[int]) -> None:
    """Wait for the backlog to drain, sampling the worker tree's RSS every CHECKPOINT tasks."""
    from bench.transport import process_tree

    ready_at = wait_ready(worker, ledger)
    worker_clock, server_clock = MachineClock(process_tree(worker.pid)), MachineClock(server_pids)
    next_checkpoint, last_change, last_done = CHECKPOINT, time.monotonic(), 0
    first_at = previous_at = ready_at
    while (done := int(ledger.get(DONE_KEY) or 0)) < run.tasks:
        now = time.monotonic()
        if done != last_done:
            last_change, last_done = now, done
        elif now - last_change > STALL_SECONDS:
            raise RuntimeError(f"stalled at {done} of {run.tasks} for {STALL_SECONDS:.0f} s")
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.logs()[-2000:]}")
        while done >= next_checkpoint:
            first_at = now if next_checkpoint == CHECKPOINT else first_at
            previous_at = checkpoint(run, worker.pid, now, previous_at)
            next_checkpoint += CHECKPOINT
        time.sleep(0.05)
    finished_at = time.monotonic()
    # The last poll may have seen the backlog drained across checkpoints it had not recorded.
    while run.tasks >= next_checkpoint:
        first_at = finished_at if next_checkpoint == CHECKPOINT else first_at
        previous_at = checkpoint(run, worker.pid, finished_at, previous_at)
        next_checkpoint += CHECKPOINT
    run.worker_cpu_ms = worker_clock.cpu_ms() / run.tasks
    run.server_cpu_ms = server_clock.cpu_ms() / run.tasks
    run.steal_share = worker_clock.steal_share()
    run.drained = run.tasks
    run.drain_rate = run.tasks / (finished_at - ready_at)
    run.steady_drain_rate = (run.tasks - CHECKPOINT) / (finished_at - first_at)
    time.sleep(1.0)  # the last acks and results settle
    run.rss_first_mib = run.rss_curve_mib[0]
    run.rss_end_mib = tree_rss_mib(worker.pid)
    print(f"  {run.broker}: drained at {run.drain_rate:,.0f}/s; RSS {run.rss_first_mib:.0f} -> "
          f"{run.rss_end_mib:.0f} MiB ({100 * run.rss_growth:+.1f} %)", flush=True)
    print(f"  {run.broker}: rate per {CHECKPOINT:,} tasks: "
          f"{' '.join(f'{rate:.0f}' for rate in run.rate_curve)}", flush=True)
    print(f"  {run.broker}: CPU per task: worker {run.worker_cpu_ms:.2f} ms, server "
          f"{run.server_cpu_ms:.2f} ms; steal {run.steal_share:.0%} of the machine", flush=True)


def bare_drain(tasks: int, round_number: int, server_pids: list[int]) -> BareDrain:
    """The emulator's own drain of the backlog (bench/transport.py's ceiling), followed."""
    from bench.transport import TICK_MS, cpu_ticks, measure_drain_ceiling

    bare = BareDrain(tasks, round_number)
    marks: list[tuple[float, int]] = []

    def on_acked(total: int) -> None:
        if total >= CHECKPOINT * (len(marks) + 1):
            marks.append((time.monotonic(), cpu_ticks(server_pids)))

    started, ticks = time.monotonic(), cpu_ticks(server_pids)
    try:
        bare.drain_rate = measure_drain_ceiling(
            f"scale-bare-{uuid.uuid4().hex[:8]}", tasks, BARE_SLOTS, on_acked=on_acked)
    except Exception as exc:
        bare.failure = f"{type(exc).__name__}: {exc}"[:500]
        return bare
    for at, now_ticks in marks:
        bare.rate_curve.append(round(CHECKPOINT / max(at - started, 1e-6), 1))
        bare.server_cpu_curve.append(round((now_ticks - ticks) * TICK_MS / CHECKPOINT, 2))
        started, ticks = at, now_ticks
    print(f"  bare client: drained at {bare.drain_rate:,.0f}/s; rate per {CHECKPOINT:,}: "
          f"{' '.join(f'{rate:.0f}' for rate in bare.rate_curve)}", flush=True)
    print(f"  bare client: emulator CPU per message (ms) per {CHECKPOINT:,}: "
          f"{' '.join(f'{ms:.2f}' for ms in bare.server_cpu_curve)}", flush=True)
    return bare


def wait_ready(worker: Any, ledger: redis.Redis, timeout: float = 60.0) -> float:
    """When the worker logged " ready." (or took its first task, whichever came first)."""
    from harness.workers import READY_MARKER

    deadline = time.monotonic() + timeout
    while READY_MARKER not in worker.logs() and not ledger.get(DONE_KEY):
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready:\n{worker.logs()[-2000:]}")
        time.sleep(0.01)
    return time.monotonic()


def warm_up_emulator(port: int) -> None:
    """Point this process at the emulator and warm it as bench/transport.py does: its JVM takes
    ~2,000 Publish calls to go from 1.5 to 0.6 ms per call, which the first round's backlog
    would pay and hosted Pub/Sub never does."""
    from bench.transport import measure_publish_round_trip

    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    measure_publish_round_trip("scale-warm-up")


def broker_env(name: str, index: int, base: str, workdir: Path) -> dict[str, str]:
    """The settings of one broker's run; ours gets a fresh emulator project each round."""
    url = f"pubsub://scale-{uuid.uuid4().hex[:8]}" if name == "ours" else f"{base}/1"
    return {**os.environ, "BROKER_URL": url, "RESULT_BACKEND": f"{base}/{10 + index}",
            LEDGER_ENV: f"{base}/{20 + index}", "LOG_FORMAT": "text",
            "VIVIDLY_DATA_DIR": str(workdir / f"data-{name}"),
            "WORKER_CONCURRENCY": "2", "PYTHONPATH": str(REPO_ROOT)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per broker, alternating; the summary quotes medians")
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=BROKERS)
    parser.add_argument("--no-bare", action="store_true",
                        help="skip the bare client's drain of the emulator")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    if args.tasks <= CHECKPOINT:
        parser.error(f"--tasks must be above {CHECKPOINT:,}: the steady rate is taken after "
                     "the first checkpoint")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench.transport import process_tree
    from harness.services import start_pubsub_emulator, start_redis

    for name in ("BROKER_URL", "CELERY_BROKER_URL", "RESULT_BACKEND", "WORKER_CONCURRENCY",
                 "WORKER_PREFETCH_MULTIPLIER", "VIVIDLY_QUEUE", "LOG_FORMAT", "LOG_LEVEL"):
        os.environ.pop(name, None)
    runs: list[ScaleRun] = []
    bare_runs: list[BareDrain] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        services: list[Any] = []
        try:
            redis_server = start_redis(workdir)
            services.append(redis_server)
            base = f"redis://127.0.0.1:{redis_server.port}"
            server_pids = {"redis": process_tree(redis_server.process.pid)}
            if "ours" in args.brokers:
                emulator = start_pubsub_emulator(workdir)
                services.append(emulator)
                server_pids["ours"] = process_tree(emulator.process.pid)
                warm_up_emulator(emulator.port)
            for round_number in range(1, args.rounds + 1):
                round_runs = [(ScaleRun(name, args.tasks, round_number),
                               broker_env(name, index, base, workdir))
                              for index, name in enumerate(args.brokers)]
                print(f"round {round_number} of {args.rounds}: publishing {args.tasks} no-op "
                      f"tasks per broker, in alternating chunks of {PUBLISH_CHUNK:,}", flush=True)
                publish_backlogs(round_runs, first=round_number - 1)
                for run, env in round_runs:
                    print(f"{run.broker}, round {round_number} of {args.rounds}: draining",
                          flush=True)
                    runs.append(run_broker(run, env, workdir, server_pids[run.broker]))
                if "ours" in args.brokers and not args.no_bare:
                    print(f"bare client, round {round_number}: {args.tasks} messages", flush=True)
                    bare_runs.append(bare_drain(args.tasks, round_number, server_pids["ours"]))
        finally:
            for service in reversed(services):
                service.stop()
    for run in runs:
        verdict = "no leak" if run.leak_free else "LEAK?" if run.failure is None else "failed"
        print(f"{run.broker} #{run.round}: {run.tasks} tasks, drain {run.drain_rate:,.0f}/s, RSS "
              f"after {CHECKPOINT} {run.rss_first_mib:.0f} MiB, at end {run.rss_end_mib:.0f} MiB "
              f"({100 * run.rss_growth:+.1f} %): {verdict}" if run.failure is None
              else f"{run.broker} #{run.round}: failed: {run.failure}")
    medians = median_figures(runs)
    for line in summary_lines(medians):
        print(line)
    if args.json:
        command = shlex.join([".venv/bin/python", "-m", "bench.scale", *sys.argv[1:]])
        figures = {"command": command, "checkpoint": CHECKPOINT, "rounds": args.rounds,
                   "leak_tolerance": LEAK_TOLERANCE, "medians": medians,
                   "bare": [asdict(bare) for bare in bare_runs], "runs": [
                       {**asdict(run), "rss_growth": run.rss_growth if run.rss_first_mib else None,
                        "leak_free": run.leak_free} for run in runs]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if all(run.leak_free for run in runs) else 1)


#: The figures the summary takes the median of, per broker, over the runs that finished.
MEDIAN_KEYS = ("publish_rate", "publish_pipelined_rate", "drain_rate", "steady_drain_rate",
               "worker_cpu_ms", "server_cpu_ms", "steal_share")


def median_figures(runs: list[ScaleRun]) -> dict[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = {}
    for broker in dict.fromkeys(run.broker for run in runs):
        done = [asdict(run) for run in runs if run.broker == broker and run.failure is None]
        medians[broker] = {
            key: statistics.median(values) for key in MEDIAN_KEYS
            if (values := [run[key] for run in done if run[key] is not None])
        }
        medians[broker]["runs"] = len(done)
    return medians


def summary_lines(medians: dict[str, dict[str, float]]) -> list[str]:
    ours, other = medians.get("ours", {}), medians.get("redis", {})
    lines = []
    for key in MEDIAN_KEYS:
        if key not in ours and key not in other:
            continue
        cells = [f"{broker} {figures[key]:,.2f}" for broker, figures in medians.items()
                 if key in figures]
        ratio = (f" (ours/redis {ours[key] / other[key]:.2f}x)"
                 if key in ours and other.get(key) else "")
        lines.append(f"median {key}: {', '.join(cells)}{ratio}")
    if ours.get("publish_pipelined_rate") and other.get("publish_rate"):
        lines.append(f"pipelined publish vs Redis's publish: "
                     f"{ours['publish_pipelined_rate'] / other['publish_rate']:.2f}x")
    return lines


if __name__ == "__main__":
    main()
