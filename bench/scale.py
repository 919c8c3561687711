"""Memory and scale: 20,000 no-op tasks through one worker, over Pub/Sub and over Redis.

    .venv/bin/python bench/scale.py [--tasks 20000] [--brokers ours redis] [--json PATH]

For each broker the script publishes the whole backlog first (one producer), then starts one
Celery worker (prefork, ``--concurrency 2``, the app's settings: acks late, prefetch 1, events
on, results in Redis) and lets it drain. It records the summed resident set (RSS) of the
worker's process tree (main process and pool children, from /proc) after every 1,000 tasks and
once the backlog is drained, and the drain rate. No leak means: RSS at the end within 10 % of
RSS after the first 1,000 tasks. Not a test (it takes minutes); ``bench/all.py`` runs it for
docs/benchmarks.md. Starts its own emulator and Redis on loopback, stopped by PID.

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
STALL_SECONDS = 60.0
BROKERS = ("ours", "redis")


@dataclass
class ScaleRun:
    broker: str
    tasks: int
    publish_rate: float = 0.0
    drain_rate: float = 0.0  # tasks/s, worker ready -> last task done
    steady_drain_rate: float = 0.0  # tasks/s, after the first checkpoint -> last task done
    rss_first_mib: float = 0.0  # after the first CHECKPOINT tasks
    rss_end_mib: float = 0.0  # once the backlog is drained
    rss_curve_mib: list[float] = field(default_factory=list)  # after each CHECKPOINT tasks
    #: Drain rate (tasks/s) over each CHECKPOINT tasks: whether the rate holds through the run.
    rate_curve: list[float] = field(default_factory=list)
    drained: int = 0
    failure: str | None = None

    @property
    def rss_growth(self) -> float:
        return (self.rss_end_mib - self.rss_first_mib) / self.rss_first_mib

    @property
    def leak_free(self) -> bool:
        return self.failure is None and abs(self.rss_growth) <= LEAK_TOLERANCE


def tree_rss_mib(root: int) -> float:
    from bench.transport import process_tree  # the repo root is on sys.path by now (main)

    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    return total / 1024


def run_broker(name: str, env: dict[str, str], workdir: Path, tasks: int) -> ScaleRun:
    from tests.workers import WorkerProcess
    from vividly_tasks import create_app
    from vividly_tasks.settings import Settings

    run = ScaleRun(name, tasks)
    ledger = redis.Redis.from_url(env[LEDGER_ENV])
    ledger.delete(DONE_KEY)
    app = create_app(Settings(broker_url=env["BROKER_URL"], result_backend=env["RESULT_BACKEND"],
                              data_dir=Path(env["VIVIDLY_DATA_DIR"]), log_format="text"))
    app.conf.broker_connection_timeout = 10
    worker = None
    try:
        publish(app, run)
        command = [sys.executable, "-m", "celery", "-A", "vividly_tasks", "worker",
                   "--include", "bench.scale", "--hostname", f"scale-{name}@%h",
                   "--concurrency", "2", "--pool", "prefork", "--loglevel", "INFO"]
        worker = WorkerProcess(command, env, workdir / f"worker-{name}.log").start()
        drain(worker, ledger, run)
    except Exception as exc:
        run.failure = f"{type(exc).__name__}: {exc}"[:500]
        run.drained = int(ledger.get(DONE_KEY) or 0)
        print(f"  {name}: failed: {run.failure}", flush=True)
    finally:
        if worker is not None:
            worker.stop()
        app.close()
        ledger.close()
    return run


def publish(app: Any, run: ScaleRun) -> None:
    """The whole backlog, from one producer, before the worker starts."""
    with app.connection_for_write() as connection:
        queue = app.amqp.queues[app.conf.task_default_queue]
        queue(connection.default_channel).declare()
    task = app.tasks["scale.noop"]
    with app.producer_or_acquire() as producer:
        started = time.perf_counter()
        for _ in range(run.tasks):
            task.apply_async(producer=producer)
        run.publish_rate = run.tasks / (time.perf_counter() - started)
    print(f"  {run.broker}: published {run.tasks} at {run.publish_rate:,.0f}/s", flush=True)


def drain(worker: Any, ledger: redis.Redis, run: ScaleRun) -> None:
    """Wait for the backlog to drain, sampling the worker tree's RSS every CHECKPOINT tasks."""
    ready_at = wait_ready(worker, ledger)
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
            run.rss_curve_mib.append(tree_rss_mib(worker.pid))
            run.rate_curve.append(round(CHECKPOINT / max(now - previous_at, 1e-6), 1))
            previous_at = now
            if next_checkpoint == CHECKPOINT:
                first_at = now
            next_checkpoint += CHECKPOINT
        time.sleep(0.05)
    finished_at = time.monotonic()
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


def wait_ready(worker: Any, ledger: redis.Redis, timeout: float = 60.0) -> float:
    """When the worker logged " ready." (or took its first task, whichever came first)."""
    from tests.workers import READY_MARKER

    deadline = time.monotonic() + timeout
    while READY_MARKER not in worker.logs() and not ledger.get(DONE_KEY):
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker not ready:\n{worker.logs()[-2000:]}")
        time.sleep(0.01)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=BROKERS)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(REPO_ROOT))
    from tests.services import start_pubsub_emulator, start_redis

    for name in ("BROKER_URL", "CELERY_BROKER_URL", "RESULT_BACKEND", "WORKER_CONCURRENCY",
                 "WORKER_PREFETCH_MULTIPLIER", "VIVIDLY_QUEUE", "LOG_FORMAT", "LOG_LEVEL"):
        os.environ.pop(name, None)
    runs: list[ScaleRun] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        services: list[Any] = []
        try:
            redis_server = start_redis(workdir)
            services.append(redis_server)
            base = f"redis://127.0.0.1:{redis_server.port}"
            if "ours" in args.brokers:
                emulator = start_pubsub_emulator(workdir)
                services.append(emulator)
                os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{emulator.port}"
            for index, name in enumerate(args.brokers):
                url = f"pubsub://scale-{uuid.uuid4().hex[:8]}" if name == "ours" else f"{base}/1"
                env = {**os.environ, "BROKER_URL": url, "RESULT_BACKEND": f"{base}/{10 + index}",
                       LEDGER_ENV: f"{base}/{20 + index}", "LOG_FORMAT": "text",
                       "VIVIDLY_DATA_DIR": str(workdir / f"data-{name}"),
                       "WORKER_CONCURRENCY": "2", "PYTHONPATH": str(REPO_ROOT)}
                print(f"{name}: {args.tasks} no-op tasks", flush=True)
                runs.append(run_broker(name, env, workdir, args.tasks))
        finally:
            for service in reversed(services):
                service.stop()
    for run in runs:
        verdict = "no leak" if run.leak_free else "LEAK?" if run.failure is None else "failed"
        print(f"{run.broker}: {run.tasks} tasks, drain {run.drain_rate:,.0f}/s, RSS after "
              f"{CHECKPOINT} {run.rss_first_mib:.0f} MiB, at end {run.rss_end_mib:.0f} MiB "
              f"({100 * run.rss_growth:+.1f} %): {verdict}" if run.failure is None
              else f"{run.broker}: failed: {run.failure}")
    if args.json:
        command = shlex.join([".venv/bin/python", "bench/scale.py", *sys.argv[1:]])
        figures = {"command": command, "checkpoint": CHECKPOINT,
                   "leak_tolerance": LEAK_TOLERANCE, "runs": [
                       {**asdict(run), "rss_growth": run.rss_growth if run.rss_first_mib else None,
                        "leak_free": run.leak_free} for run in runs]}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    sys.exit(0 if all(run.leak_free for run in runs) else 1)


if __name__ == "__main__":
    main()
