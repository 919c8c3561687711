"""Our transport and Kombu's ``gcpubsub`` at cloud distance: every Pub/Sub call pays a round trip.

On loopback the emulator answers a call in about a millisecond; on Google Cloud a call is tens
of milliseconds. This script puts a latency proxy (harness/latency_proxy.py) between every
Pub/Sub client (the workers, the CLIs and this process's publishers) and the emulator, and
measures at each round trip (``--rtt-ms``, default 0 10 20 50) per broker: drain rate of queued
no-op tasks and of 50 ms tasks (a prefork ``celery worker``, concurrency 2, the app's prefetch),
apply_async -> task start (median), confirmed and pipelined publish rates from one thread,
``celery call`` and ``celery inspect ping`` wall time, and a ``vividly-worker job``'s start ->
ready and ready -> exit on an empty queue. Redis stays on loopback (as Memorystore is close to
its clients), measured once per round. Rounds interleave the brokers in a rotating order and
each figure is the median of its rounds. Not a timed test::

    .venv/bin/python -m bench.cloud_distance [--quick] [--rtt-ms 0 10 20 50] [--rounds 3]
                                             [--pull-ahead N]

Writes docs/benchmarks-cloud-distance.md and bench/results/cloud_distance.json. The harness
(workers, brokers' settings, figures) is bench/transport.py's; its workers load its tasks.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import transport as harness
from bench.idle_exit import one_run as job_run
from harness.latency_proxy import ProxyProcess

REPO_ROOT = Path(__file__).resolve().parent.parent

DOC_PATH = REPO_ROOT / "docs" / "benchmarks-cloud-distance.md"
JSON_PATH = REPO_ROOT / "bench" / "results" / "cloud_distance.json"
BROKERS = ("ours", "gcpubsub")  # through the proxy; Redis is measured on loopback
#: google-cloud-pubsub's own StreamingPull subscriber, no Celery: what streaming pull does with
#: the worker's prefetch as its flow control (drain rows only; ``--brokers ... streaming``).
STREAMING = "streaming"
LOOPBACK = "redis"
NAP_SECONDS = 0.05
JOB_IDLE_SECONDS = 1.0
#: The product's setting of our transport's ``pull_ahead`` option (``--pull-ahead``).
PULL_AHEAD_VARIABLE = "PUBSUB_PULL_AHEAD"
CLI_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Sizes:
    noop_tasks: int  # queued, then drained
    nap_tasks: int  # 50 ms tasks, queued, then drained
    publish_tasks: int  # confirmed publishes (one round trip each)
    pipelined_tasks: int  # pipelined publishes: enough that the last round trip is small
    samples: int  # apply_async -> start samples after warm-up
    rounds: int


FULL = Sizes(noop_tasks=200, nap_tasks=80, publish_tasks=150, pipelined_tasks=1500,
             samples=8, rounds=3)
QUICK = Sizes(noop_tasks=120, nap_tasks=40, publish_tasks=60, pipelined_tasks=500, samples=5,
              rounds=1)

ROWS = (
    # key, label, unit scale, format
    ("drain_noop", "drain {noop} queued no-op tasks (tasks/s)", 1.0, "{:,.1f}"),
    ("drain_nap", "drain {nap} queued 50 ms tasks (tasks/s; 40/s is the pool's ceiling)",
     1.0, "{:,.1f}"),
    ("latency", "apply_async -> task starts, median (ms)", 1000.0, "{:,.0f}"),
    ("publish_confirmed", "publish {publish} from one thread, `ignore_result`; ours confirmed, "
     "gcpubsub's and Redis's not waited for (tasks/s)", 1.0, "{:,.0f}"),
    ("publish_pipelined", "publish {pipelined}, pipelined (`publish_in_flight`), until all "
     "confirmed (tasks/s)", 1.0, "{:,.0f}"),
    ("call", "`celery call` CLI, wall (s)", 1.0, "{:.2f}"),
    ("ping", "`celery inspect ping` CLI, wall (s)", 1.0, "{:.2f}"),
    ("start_ready", "`celery worker` start -> ready (s)", 1.0, "{:.2f}"),
    ("job_ready", "`vividly-worker job` start -> ready (s)", 1.0, "{:.2f}"),
    ("job_exit", f"`vividly-worker job` ready -> exit, `--idle-timeout {JOB_IDLE_SECONDS:g}`"
     " on an empty queue (s)", 1.0, "{:.2f}"),
    ("submit", "`vividly submit` CLI (a lesson request: its row, then its task), wall (s)",
     1.0, "{:.2f}"),
    ("provision_verify", "`vividly provision --verify` CLI, wall (s)", 1.0, "{:.2f}"),
)
#: The paths whose Pub/Sub calls are counted (bench/call_count.py), in the order of ROWS; for
#: a worker, the calls made from its start until it is ready.
COUNTED = ("start_ready", "job_ready", "call", "ping", "submit", "provision_verify")
COUNTED_LABELS = {
    "start_ready": "`celery worker` start -> ready",
    "job_ready": "`vividly-worker job` start -> ready",
    "call": "`celery call`",
    "ping": "`celery inspect ping`",
    "submit": "`vividly submit`",
    "provision_verify": "`vividly provision --verify`",
}
HIGHER_IS_BETTER = frozenset({"drain_noop", "drain_nap", "publish_confirmed",
                              "publish_pipelined"})


@contextlib.contextmanager
def emulator_host(address: str) -> Iterator[None]:
    """This process's Pub/Sub clients made from now on reach ``address`` (clients are cached
    per emulator host, so switching back reuses the earlier ones)."""
    before = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = address
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = before


def streaming_drain(project: str, count: int, slots: int, work_seconds: float) -> float:
    """Messages per second over a queued backlog of ``count``, drained by the client's
    ``subscribe()`` (StreamingPull) with ``FlowControl(max_messages=slots)`` and ``slots``
    callback threads, each holding its message ``work_seconds`` before the ack."""
    import concurrent.futures
    import threading

    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, "streaming")
    path = subscriber.subscription_path(project, "streaming")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=path, topic=topic)
    lock, acked, finished = threading.Lock(), [0], threading.Event()

    def callback(message: Any) -> None:
        if work_seconds:
            time.sleep(work_seconds)
        message.ack()
        with lock:
            acked[0] += 1
            if acked[0] >= count:
                finished.set()

    try:
        for future in [publisher.publish(topic, b"x" * 600) for _ in range(count)]:
            future.result(timeout=30)
        time.sleep(1.0)
        started = time.perf_counter()
        streaming = subscriber.subscribe(
            path, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=slots),
            scheduler=ThreadScheduler(concurrent.futures.ThreadPoolExecutor(slots)),
        )
        try:
            if not finished.wait(max(60.0, count / 5)):
                raise harness.Failed(f"{acked[0]} of {count} acked")
            return count / (time.perf_counter() - started)
        finally:
            streaming.cancel()
            with contextlib.suppress(Exception):
                streaming.result(timeout=10)
    finally:
        subscriber.close()
        publisher.stop()


def measure_streaming(figures: Any, sizes: Sizes, prefetch: int) -> None:
    for key, count, work in (("drain_noop", sizes.noop_tasks, 0.0),
                             ("drain_nap", sizes.nap_tasks, NAP_SECONDS)):
        figures.measure_round(key, lambda c=count, w=work: streaming_drain(
            f"cloud-{uuid.uuid4().hex[:8]}", c, prefetch, w))


@dataclass
class Cell:
    """One broker at one round trip, within one round."""

    run: Any  # harness.BrokerRun
    direct: str  # the emulator's own address: backlogs are queued without the proxy
    sizes: Sizes
    #: ``vividly submit``'s database (PostgreSQL when installed; else the default SQLite).
    database_url: str | None = None
    #: ``--paths-only``: the start-up and CLI paths, no drain, latency or publish figures.
    paths_only: bool = False

    def queue_backlog(self, task_name: str, args: tuple[Any, ...], count: int) -> None:
        """Queue ``count`` tasks for the next worker, directly (what is measured is the
        drain, not how the backlog got there) and pipelined where the broker can."""
        with emulator_host(self.direct):
            app = self.run.make_app()
            if self.run.name == "ours":
                app.conf.broker_transport_options = {
                    **app.conf.broker_transport_options,
                    "publish_in_flight": harness.PIPELINED_IN_FLIGHT,
                }
            try:
                harness.declare_task_queue(app)
                task = app.tasks[task_name]
                with app.producer_or_acquire() as producer:
                    for _ in range(count):
                        task.apply_async(args, producer=producer, ignore_result=True)
                    getattr(producer.channel, "flush_publishes", lambda: None)()
            finally:
                app.close()
        time.sleep(1.0)  # queued well before the worker starts, as in bench/transport.py
        self.run.ledger.delete(harness.DONE_KEY)

    def declare_queue(self) -> None:
        """The task queue created directly, not through the proxy nor counted."""
        with emulator_host(self.direct):
            app = self.run.make_app()
            try:
                harness.declare_task_queue(app)
            finally:
                app.close()

    def drain(self, task_name: str, args: tuple[Any, ...], count: int) -> float:
        self.queue_backlog(task_name, args, count)
        figures = self.run.figures
        figures.measure_round("start_ready", self.run.start_worker)
        try:
            return float(self.run.drain(count))
        finally:
            self.stop_worker()

    def stop_worker(self) -> None:
        if self.run.worker is not None:
            self.run.worker.stop()

    def latency(self) -> float:
        return float(statistics.median(self.run.latency()))

    def cli(self, *arguments: str, expect: str, env: dict[str, str] | None = None,
            program: tuple[str, ...] = ("celery", "-A", "vividly_tasks")) -> float:
        command = [sys.executable, "-m", *program, *arguments]
        started = time.monotonic()
        try:
            result = subprocess.run(command, env=env or self.run.env, cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS,
                                    check=False)
        except subprocess.TimeoutExpired:
            raise harness.Failed(f"still running after {CLI_TIMEOUT_SECONDS:.0f} s") from None
        wall = time.monotonic() - started
        if result.returncode != 0 or expect not in result.stdout:
            said = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
            raise harness.Failed(f"exit {result.returncode}: {said[0][:100]}")
        return wall

    def job(self, env: dict[str, str] | None = None) -> tuple[float, float]:
        """A job execution on the drained (empty) queue: start -> ready, ready -> exit."""
        startup, wall = job_run(env or self.run.env, self.run.workdir, JOB_IDLE_SECONDS,
                                "prefork")
        return startup, wall - startup

    # --- paths whose Pub/Sub calls are counted ---------------------------------------------
    def counted(self, key: str, path: Any) -> None:
        """One round of ``key``: ``path(env)`` runs it with the call recorder on
        (bench/call_count.py) and returns (wall, since, until): the window of the calls that
        count (until None: all of them). Stores the wall, the calls and the sequential ones."""
        from bench import call_count

        figures = self.run.figures
        log = self.run.workdir / f"calls-{key}-{uuid.uuid4().hex[:6]}.log"
        env = call_count.recording_env(self.run.env, log)
        timed: list[tuple[float, float, float | None]] = []

        def run_path() -> float:
            timed.append(path(env))
            return timed[-1][0]

        figures.measure_round(key, run_path)
        if not timed:
            return
        _, since, until = timed[0]
        time.sleep(0.2)  # calls still ending (a worker's, a CLI's at exit) finish their line
        counted = call_count.count(call_count.read(log), since, until)
        figures.measure_round(f"{key}_calls", lambda: float(counted.total))
        figures.measure_round(f"{key}_sequential", lambda: float(counted.sequential))
        figures.notes.append(f"{key}: {counted.describe()}")

    def counted_cli(self, key: str, *arguments: str, expect: str,
                    program: tuple[str, ...] = ("celery", "-A", "vividly_tasks"),
                    extra_env: dict[str, str] | None = None) -> None:
        def path(env: dict[str, str]) -> tuple[float, float, float | None]:
            since = time.time()
            return self.cli(*arguments, expect=expect, env={**env, **(extra_env or {})},
                            program=program), since, None
        self.counted(key, path)

    def counted_worker_start(self) -> None:
        def path(env: dict[str, str]) -> tuple[float, float, float | None]:
            plain, self.run.env = self.run.env, env
            try:
                since = time.time()
                wall = self.run.start_worker()
            finally:
                self.run.env = plain
            return wall, since, since + wall
        self.counted("start_ready", path)

    def counted_job(self, exits: list[float]) -> None:
        def path(env: dict[str, str]) -> tuple[float, float, float | None]:
            since = time.time()
            ready, exit_ = self.job(env)
            exits.append(exit_)
            return ready, since, since + ready
        self.counted("job_ready", path)

    def submit_env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url} if self.database_url else {}

    def publish_rates(self) -> None:
        figures = self.run.figures
        figures.measure_round("publish_confirmed", lambda: self.run.publish_aside(
            pipelined=False, results=False))
        if self.run.name == "ours":
            self.run.sizes = dataclasses.replace(self.run.sizes,
                                                 tasks=self.sizes.pipelined_tasks)
            figures.measure_round("publish_pipelined", lambda: self.run.publish_aside(
                pipelined=True, results=False))

    def measure(self) -> None:
        from kombu import pools

        # Kombu's pools are process-wide, keyed by connection: the previous round's app closed
        # the pool this round's app would get for the same URL (Redis's is the same each round).
        pools.reset()  # type: ignore[no-untyped-call]  # Kombu is unannotated
        figures, sizes = self.run.figures, self.sizes
        self.run.app = self.run.make_app()
        try:
            if not self.paths_only:
                figures.measure_round("drain_noop", lambda: self.drain(
                    "bench.noop", (), sizes.noop_tasks))
                figures.measure_round("drain_nap", lambda: self.drain(
                    "bench.nap", (NAP_SECONDS,), sizes.nap_tasks))
            if self.paths_only:  # the queue exists, as after the drains (and in production)
                self.declare_queue()
            self.counted_worker_start()  # on an empty queue
            if not self.paths_only:
                figures.measure_round("latency", self.latency)
            self.counted_cli("ping", "inspect", "ping", expect="pong")
            self.counted_cli("call", "call", "bench.noop", expect="-")
            self.stop_worker()
            if not self.paths_only:
                self.publish_rates()
            exits: list[float] = []
            self.counted_job(exits)
            for exit_ in exits:
                figures.measure_round("job_exit", lambda e=exit_: e)
            if self.run.name == "ours":
                # Last: the request it queues must not reach the job above. The queues exist
                # (the workers declared them), so the verify finds them all.
                self.counted_cli("submit", "submit", "--topic", "Tides", "--modality", "text",
                                 expect="-", program=("vividly_tasks.cli",),
                                 extra_env=self.submit_env())
                self.counted_cli("provision_verify", "provision", "--verify",
                                 expect="verified", program=("vividly_tasks.cli",))
        finally:
            self.run.close()


def make_run(name: str, rtt: float, index: int, redis_port: int, workdir: Path, sizes: Sizes,
             prefetch_multiplier: int, figures: Any) -> Any:
    project = f"cloud-{uuid.uuid4().hex[:8]}"  # a fresh project: no queue left from before
    env = harness.broker_env(name, index, project, redis_port, workdir, prefetch_multiplier)
    run = harness.BrokerRun(
        name, env, env[harness.LEDGER_ENV], workdir,
        harness.Sizes(tasks=sizes.publish_tasks, samples=sizes.samples, warmup=2,
                      floor_samples=0, idle_seconds=0, pings=1, publish_rounds=1),
        prefetch_multiplier, figures=figures,
    )
    run.ledger.flushdb()
    return run


def measure(args: argparse.Namespace, sizes: Sizes, redis_port: int, emulator: str,
            workdir: Path, database_url: str | None = None) -> dict[str, dict[str, Any]]:
    """{column: Figures}; a column is ``<broker>@<rtt>`` (Redis: ``redis@loopback``)."""
    results: dict[str, Any] = {}
    for round_index in range(args.rounds or sizes.rounds):
        for rtt in harness.rotated(list(args.rtt_ms), round_index):
            with ProxyProcess(emulator, rtt, args.jitter_ms) as proxy, \
                    emulator_host(proxy.address):
                for name in harness.rotated(list(args.brokers), round_index):
                    column = f"{name}@{rtt:g}"
                    print(f"== round {round_index + 1}, {name} at {rtt:g} ms round trip "
                          f"(load {harness.load_average()})", flush=True)
                    index = 1 + 2 * len(results)
                    figures = results.setdefault(column, harness.Figures())
                    if name == STREAMING:
                        measure_streaming(figures, sizes, 2 * args.prefetch_multiplier)
                        continue
                    run = make_run(name, rtt, index % 900, redis_port, workdir, sizes,
                                   args.prefetch_multiplier, figures)
                    Cell(run, emulator, sizes, database_url, args.paths_only).measure()
        if LOOPBACK in args.loopback:
            print(f"== round {round_index + 1}, redis on loopback", flush=True)
            figures = results.setdefault(f"{LOOPBACK}@loopback", harness.Figures())
            run = make_run(LOOPBACK, 0, 1, redis_port, workdir, sizes, args.prefetch_multiplier,
                           figures)
            Cell(run, emulator, sizes, paths_only=args.paths_only).measure()
    return results


# --- the report ----------------------------------------------------------------------------
def cell_text(figures: Any, key: str, scale: float, fmt: str) -> str:
    if figures is None:
        return "not run"
    if key in figures.values:
        return fmt.format(figures.values[key] * scale)
    return f"failed: {figures.failures[key]}" if key in figures.failures else "-"


def versus_loopback(figures: Any, base: Any, key: str) -> str:
    if figures is None or base is None or key not in figures.values or key not in base.values:
        return "-"
    if not base.values[key]:
        return "-"
    return f"{figures.values[key] / base.values[key]:.2f}x"


def render(results: dict[str, Any], args: argparse.Namespace, sizes: Sizes, loads: list[str],
           started_at: str, command: str) -> str:
    begin, end = markers(variant(args))
    lines = [
        begin,
        f"Run {started_at} with `{command}`"
        + (" (**quick smoke run, small N**)" if args.quick else "") + ".",
        "",
        f"- code measured: {harness.source_description()}",
        *harness.machine(),
        f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[-1]} "
        "(a **shared 2-core machine**: other engineers' test suites ran at the same time)",
        f"- each figure is the median of {args.rounds or sizes.rounds} round(s); rounds rotate "
        "the order of round trips and brokers",
        f"- round trip: the latency proxy adds half of it to each direction of every "
        f"connection to the emulator (jitter {args.jitter_ms:g} ms); 0 ms is the proxy with "
        "no delay (one more loopback hop than bench/transport.py)",
        f"- workers: prefork `celery worker --concurrency 2 --prefetch-multiplier "
        f"{args.prefetch_multiplier} -E`, acks late, results in Redis (loopback); a fresh "
        "emulator project per broker and round; our transport's pull-ahead: "
        + ("the default" if args.pull_ahead is None else f"`{PULL_AHEAD_VARIABLE}="
           f"{args.pull_ahead}`" + (" (off)" if args.pull_ahead == 0 else "")),
        *([f"- {TITLES[STREAMING]}: the client's `subscribe()` with `FlowControl(max_messages="
           f"{2 * args.prefetch_multiplier})` (the workers' prefetch) and as many callback "
           "threads, each sleeping the task's time before its ack (acks in the client's own "
           "batches): a streaming receive path under the same bound, without Celery"]
          if STREAMING in args.brokers else []),
        "",
        *table(results, args, sizes),
    ]
    lines += ["", *calls_table(results, args), "", *targets(results, args), "",
              *round_lines(results)]
    notes = [f"- {column}: {note}" for column, f in results.items() for note in f.notes
             if note.split(":", 1)[0] not in COUNTED]
    if notes:
        lines += ["", "Run notes:", "", *notes]
    lines.append(end)
    return "\n".join(lines)


TITLES = {"ours": "ours (`pubsub://`)", "gcpubsub": "Kombu `gcpubsub://`",
          STREAMING: "google-cloud-pubsub StreamingPull, no Celery"}


def table(results: dict[str, Any], args: argparse.Namespace, sizes: Sizes) -> list[str]:
    """A row per measure and round trip; a column per broker, then how each of ours and the
    StreamingPull client fares against its own figure at the lowest round trip."""
    brokers = [b for b in (*BROKERS, STREAMING) if b in args.brokers]
    against_near = [b for b in ("ours", STREAMING) if b in brokers]
    titles = [TITLES[b] for b in brokers] + [f"{b} vs {b} at {min(args.rtt_ms):g} ms"
                                             for b in against_near]
    if "ours" in brokers and "gcpubsub" in brokers:
        titles.append("ours / gcpubsub")
    redis_figures = results.get(f"{LOOPBACK}@loopback")
    if LOOPBACK in args.loopback:
        titles.append("Redis (loopback)")
    lines = ["| measure | round trip (ms) | " + " | ".join(titles) + " |",
             "|---" * (len(titles) + 2) + "|"]
    for key, template, scale, fmt in ROWS:
        if all(key not in results.get(f"{b}@{r:g}", harness.Figures()).values
               for b in brokers for r in args.rtt_ms):
            continue  # a measure of none of these brokers (StreamingPull has drains only)
        label = template.format(noop=sizes.noop_tasks, nap=sizes.nap_tasks,
                                publish=sizes.publish_tasks, pipelined=sizes.pipelined_tasks)
        for rtt in sorted(args.rtt_ms):
            column = {b: results.get(f"{b}@{rtt:g}") for b in brokers}
            cells = [cell_text(column[b], key, scale, fmt) for b in brokers]
            cells += [versus_loopback(column[b], results.get(f"{b}@{min(args.rtt_ms):g}"), key)
                      for b in against_near]
            if "ours" in brokers and "gcpubsub" in brokers:
                cells.append(versus_loopback(column["ours"], column["gcpubsub"], key))
            if LOOPBACK in args.loopback:
                cells.append(cell_text(redis_figures, key, scale, fmt))
            lines.append(f"| {label} | {rtt:g} | " + " | ".join(cells) + " |")
            label = ""  # the measure's name once per group
    return lines


def calls_table(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Our start-up and CLI paths: Pub/Sub calls made, how many one after another, wall."""
    if "ours" not in args.brokers:
        return []
    lines = ["Pub/Sub calls per path, ours (bench/call_count.py: every gRPC call of the path's "
             "processes, a worker's until it is ready; sequential = the longest chain of calls "
             "that ran one after another, each a round trip waited for; medians of the rounds; "
             "the methods of the last round):", "",
             "| path | round trip (ms) | calls | sequential | wall (s) | vs 0 ms | calls made |",
             "|---|---|---|---|---|---|---|"]
    near = results.get(f"ours@{min(args.rtt_ms):g}")
    for key in COUNTED:
        label = COUNTED_LABELS[key]
        for rtt in sorted(args.rtt_ms):
            figures = results.get(f"ours@{rtt:g}")
            if figures is None or key not in figures.values:
                continue
            made = [note.split(" (", 1)[-1].rstrip(")") for note in figures.notes
                    if note.startswith(f"{key}: ")]
            lines.append(
                f"| {label} | {rtt:g} | {cell_text(figures, f'{key}_calls', 1.0, '{:.0f}')} | "
                f"{cell_text(figures, f'{key}_sequential', 1.0, '{:.0f}')} | "
                f"{figures.values[key]:.2f} | {versus_loopback(figures, near, key)} | "
                f"{made[-1] if made else '-'} |")
            label = ""
    return lines


def targets(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The bars set for the transport at a 20 ms round trip, against its own loopback."""
    near, far = results.get("ours@0"), results.get("ours@20")
    if near is None or far is None:
        return []
    lines = ["Bars at a 20 ms round trip, ours against its own figure at 0 ms:", ""]
    for key, bar, what in (("drain_noop", 0.8, "no-op drain"), ("drain_nap", 0.9, "50 ms drain"),
                           ("publish_pipelined", 0.8, "pipelined publish")):
        if key in near.values and key in far.values:
            got = far.values[key] / near.values[key]
            lines.append(f"- {'met' if got >= bar else '**missed**'}: {what} >= {bar:g}x: "
                         f"{got:.2f}x ({far.values[key]:,.1f} vs {near.values[key]:,.1f}/s)")
    if "latency" in near.values and "latency" in far.values:
        limit = near.values["latency"] + 1.5 * 0.020
        got = far.values["latency"]
        lines.append(f"- {'met' if got <= limit else '**missed**'}: apply_async -> start <= "
                     f"loopback + 1.5 round trips ({1000 * limit:.0f} ms): {1000 * got:.0f} ms")
    return lines


def round_lines(results: dict[str, Any]) -> list[str]:
    lines = ["Every round's figure (the table has their medians):", ""]
    for column, figures in results.items():
        parts = [f"{key} " + ", ".join(f"{x:.4g}" for x in values)
                 for key, values in figures.rounds.items()]
        lines.append(f"- {column}: " + "; ".join(parts))
    return lines


def variant(args: argparse.Namespace) -> str:
    """What sets this run apart from the default one: its doc block's and JSON entry's name."""
    parts = []
    if list(args.brokers) != list(BROKERS):
        parts.append("--brokers " + " ".join(args.brokers))
    if args.prefetch_multiplier != 1:
        parts.append(f"--prefetch-multiplier {args.prefetch_multiplier}")
    if args.pull_ahead is not None:
        parts.append(f"--pull-ahead {args.pull_ahead}")
    if args.paths_only:
        parts.append("--paths-only")
    return " ".join(parts)


def markers(which: str) -> tuple[str, str]:
    which = f" {which}" if which else ""
    return (f"<!-- bench/cloud_distance.py{which} begin -->",
            f"<!-- bench/cloud_distance.py{which} end -->")


HEADER = """# At cloud distance: every Pub/Sub call pays a round trip

Produced by `bench/cloud_distance.py` (see bench/README.md): a latency proxy between every
Pub/Sub client and the emulator adds a round trip to each call, as a Google Cloud region does
(tens of ms) where the emulator on loopback answers in about one. Redis stays on loopback.
The block between the markers is rewritten by each run.

"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, one round: a smoke run")
    parser.add_argument("--rtt-ms", nargs="+", type=float, default=[0.0, 10.0, 20.0, 50.0])
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="added to each round trip, uniform, split between directions")
    parser.add_argument("--rounds", type=int, default=0, help="default: 3 (1 with --quick)")
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS),
                        choices=[*BROKERS, STREAMING])
    parser.add_argument("--loopback", nargs="*", default=[LOOPBACK], choices=[LOOPBACK],
                        help="Redis on loopback beside them (none: --loopback)")
    parser.add_argument("--prefetch-multiplier", type=int, default=1,
                        help="every broker's (the product's default is 1)")
    parser.add_argument("--pull-ahead", type=int, default=None,
                        help="our transport's pull_ahead (PUBSUB_PULL_AHEAD) for every process "
                        "of the run; 0 turns it off (default: the transport's own)")
    parser.add_argument("--paths-only", action="store_true",
                        help="only the start-up and CLI paths and their Pub/Sub calls")
    parser.add_argument("--no-write", action="store_true", help="print only")
    # A run with other --brokers or --prefetch-multiplier writes its own doc block and entry.
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where the figures go (default {JSON_PATH.relative_to(REPO_ROOT)}"
                        ", unless --no-write)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = QUICK if args.quick else FULL
    command = shlex.join([".venv/bin/python", "-m", "bench.cloud_distance", *sys.argv[1:]])
    for name in harness.PRODUCT_ENV:
        os.environ.pop(name, None)
    if args.pull_ahead is not None:  # read by every app's settings, the workers' included
        os.environ[PULL_AHEAD_VARIABLE] = str(args.pull_ahead)
    else:
        os.environ.pop(PULL_AHEAD_VARIABLE, None)
    loads = [harness.load_average()]
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="bench-cloud-") as tmp:
        workdir = Path(tmp)
        with harness.started_services(workdir) as (redis_server, emulator), \
                lesson_database() as database_url:
            direct = f"127.0.0.1:{emulator.port}"
            warm_emulator(direct)
            results = measure(args, sizes, redis_server.port, direct, workdir, database_url)
    loads.append(harness.load_average())
    block = render(results, args, sizes, loads, started_at, command)
    print(block)
    json_path = args.json or (None if args.no_write else JSON_PATH)
    if json_path is not None:
        # One entry per variant, so a run with other options keeps the default run's figures.
        stored = json.loads(json_path.read_text()) if json_path.exists() else {}
        stored[variant(args) or "default"] = {
            "command": command, "started_at": started_at, "loads": loads, "quick": args.quick,
            "code": harness.source_description(), "sizes": vars(sizes),
            "rtt_ms": args.rtt_ms, "prefetch_multiplier": args.prefetch_multiplier,
            "results": {column: vars(f) for column, f in results.items()},
        }
        json_path.write_text(json.dumps(stored, indent=2) + "\n")
    if not args.no_write:
        harness.replace_block(DOC_PATH, *markers(variant(args)), block,
                              header=HEADER)
        print(f"wrote {DOC_PATH}")


@contextlib.contextmanager
def lesson_database() -> Iterator[str | None]:
    """PostgreSQL on loopback for ``vividly submit`` (harness/services.py; stopped by PID), or
    None when it is not installed (the lesson settings' SQLite file)."""
    from harness.services import ServiceUnavailable, start_postgres

    try:
        cluster = start_postgres()
    except ServiceUnavailable as exc:
        print(f"vividly submit uses SQLite: {exc}", flush=True)
        yield None
        return
    try:
        yield cluster.url
    finally:
        cluster.stop()


def warm_emulator(address: str) -> None:
    """The emulator's JVM compiles its Publish path over its first ~2,000 calls
    (bench/transport.py): warm it before the first cell, so that cell pays no more."""
    with emulator_host(address):
        harness.measure_publish_round_trip(f"cloud-warm-{uuid.uuid4().hex[:6]}")


if __name__ == "__main__":
    main()
