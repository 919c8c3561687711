"""Our Pub/Sub transport against Kombu's ``gcpubsub`` and Redis, with one harness, in one run.

Starts its own Pub/Sub emulator and Redis on loopback (stopped by PID at the end), then for
each broker -- ours (``pubsub://bench-<n>``), Kombu's ``gcpubsub://projects/bench-<n>`` and
Redis, each on a fresh emulator project / Redis database -- runs real prefork workers
(``--concurrency 2``, the same prefetch multiplier, events on, results in Redis) and measures:
publish rate, drain rate of a queued backlog, apply_async -> task start latency, idle CPU,
warm shutdown and the ``celery inspect ping`` CLI; plus the bare google-cloud-pubsub client's
publish -> delivery floor on the same emulator. Writes docs/benchmarks-transport.md and prints
the table. Not a timed test:

    .venv/bin/python -m bench.transport [--quick] [--brokers ours gcpubsub redis] [--no-write]
                                        [--tracing]

``--tracing`` adds a column: ours with OpenTelemetry on (``vividly_tasks.worker.tracing``) in
the publishing process and the worker, every span exported over OTLP/gRPC to a loopback
receiver in a process of its own (harness/otlp_receiver.py), for the overhead of tracing.

Workers import this module (``--include bench.transport``) for its two tasks; everything the
harness needs is imported inside ``main()`` so that the worker pays nothing for it.
"""

# Imports of the harness sit inside functions on purpose: workers import this module for its
# tasks and should not load the test harness, the emulator client or the app factory twice.
# ruff: noqa: PLC0415

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, TypeVar

import redis
from celery import shared_task
from celery.signals import worker_init, worker_ready

LEDGER_ENV = "BENCH_LEDGER_URL"
DONE_KEY = "bench:done"  # one completion time (time.time()) per no-op task
STAMP_KEY = "bench:stamps"  # [token, start time] per latency sample
READY_KEY = "bench:ready"  # time.time() of the worker's worker_ready signal
TRACING_ENV = "BENCH_TRACING"  # set: the worker traces (--tracing)


@functools.cache
def _ledger_of(pid: int) -> redis.Redis:
    return redis.Redis.from_url(os.environ[LEDGER_ENV])


def ledger() -> redis.Redis:
    """This process's ledger connection (a pool child gets its own after the fork)."""
    return _ledger_of(os.getpid())


@shared_task(name="bench.noop")
def noop() -> None:
    """A no-op task that records when it finished, so completions are counted without results."""
    ledger().rpush(DONE_KEY, repr(time.time()))


@shared_task(name="bench.nap")
def nap(seconds: float) -> None:
    """A task that works ``seconds`` (sleeping: the pool's slot is busy, the CPU is not), then
    records its completion like ``noop``."""
    time.sleep(seconds)
    ledger().rpush(DONE_KEY, repr(time.time()))


@shared_task(name="bench.stamp")
def stamp(token: str) -> None:
    """Records the time it started (the latency sample's end)."""
    started = time.time()
    ledger().rpush(STAMP_KEY, json.dumps([token, started]))


@worker_init.connect(weak=False)
def _trace_if_asked(sender: Any = None, **_: Any) -> None:
    """``--tracing``: the worker's tracing, as ``vividly-worker`` sets it up from the
    environment (OTEL_TRACES_EXPORTER), before the pool forks. (``worker_init``: the first
    signal after Celery imported ``--include``'s modules, this one among them.)"""
    if os.environ.get(TRACING_ENV) and sender is not None:
        from vividly_tasks.worker import tracing

        tracing.configure(sender.app)


@worker_ready.connect(weak=False)
def _record_ready(**_: Any) -> None:
    if os.environ.get(LEDGER_ENV):
        ledger().set(READY_KEY, repr(time.time()))



# ------------------------------------------------------------------------------------------
# The harness (runs only in the benchmark process).
# ------------------------------------------------------------------------------------------
import argparse  # noqa: E402 - the tasks above stay at the top, for the workers
import contextlib  # noqa: E402
import platform  # noqa: E402
import queue as queue_module  # noqa: E402
import random  # noqa: E402
import shlex  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = REPO_ROOT / "docs" / "benchmarks-transport.md"
T = TypeVar("T")


def markers(prefetch_multiplier: int) -> tuple[str, str]:
    """The doc block this run rewrites: one for the default prefetch, one per other value."""
    which = "" if prefetch_multiplier == 1 else f" --prefetch-multiplier {prefetch_multiplier}"
    return f"<!-- bench/transport.py{which} begin -->", f"<!-- bench/transport.py{which} end -->"


BROKERS = ("ours", "gcpubsub", "redis")
#: ``--tracing``'s column: ours with tracing on.
TRACED = "traced"
#: Brokers that are ours, which measure pipelined publishing too.
OURS = frozenset({"ours", TRACED})
#: Pipelined publishing's bound on unconfirmed messages; the queue the extra publish figures
#: go to; and which of another broker's figures each pipelined one is compared with.
PIPELINED_IN_FLIGHT = 1000
ASIDE_QUEUE = "bench-aside"
PIPELINED_AGAINST = {"publish_pipelined": "publish",
                     "publish_pipelined_no_results": "publish_no_results"}
#: Kombu's in-memory transport: no broker at all, so its publish rate is Celery's own cost of
#: an ``apply_async`` (message building, routing, events, the result subscription).
CELERY_ONLY = "memory"
COLUMNS = ("ours", TRACED, "gcpubsub", "redis", CELERY_ONLY)
TITLES = {"ours": "ours (`pubsub://`)", TRACED: "ours, tracing on (OTLP)",
          "gcpubsub": "Kombu `gcpubsub://`", "redis": "Redis",
          CELERY_ONLY: "Kombu `memory://` (Celery alone)"}
PACKAGES = ("celery", "kombu", "google-cloud-pubsub", "grpcio", "google-cloud-monitoring",
            "redis", "protobuf")
# Product settings that the caller's shell might carry; the benchmark sets its own.
PRODUCT_ENV = ("BROKER_URL", "CELERY_BROKER_URL", "RESULT_BACKEND", "WORKER_CONCURRENCY",
               "WORKER_PREFETCH_MULTIPLIER", "VIVIDLY_QUEUE", "LOG_FORMAT", "LOG_LEVEL")

WORKER_READY_TIMEOUT = 60.0
SAMPLE_TIMEOUT = 10.0  # one latency sample
SHUTDOWN_TIMEOUT = 30.0
PING_TIMEOUT = 40.0
STALL_TIMEOUT = 30.0  # a drain with no completion for this long has failed


class Failed(Exception):
    """A measurement that did not produce a figure; its message is the reason."""


@dataclass
class Sizes:
    tasks: int  # published, then drained; and per publish round
    samples: int  # latency samples (after warm-up)
    warmup: int
    floor_samples: int
    idle_seconds: float
    pings: int
    publish_rounds: int  # of every publish figure, the brokers interleaved (publish_rounds())


FULL = Sizes(tasks=2000, samples=20, warmup=3, floor_samples=20, idle_seconds=20.0, pings=3,
             publish_rounds=5)
QUICK = Sizes(tasks=200, samples=8, warmup=2, floor_samples=8, idle_seconds=5.0, pings=1,
              publish_rounds=2)
#: The publish figures and how each is measured (BrokerRun.publish_aside); pipelined ones are
#: ours only.
PUBLISH_MEASURES = {
    "publish": {"pipelined": False, "results": True},
    "publish_no_results": {"pipelined": False, "results": False},
    "publish_pipelined": {"pipelined": True, "results": True},
    "publish_pipelined_no_results": {"pipelined": True, "results": False},
}


@dataclass
class Figures:
    """One broker's column: a value per measure, or the reason it failed."""

    values: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: A figure measured in rounds: every round's value (``values`` holds their median).
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def measure(self, name: str, function: Callable[[], float]) -> float | None:
        try:
            value = function()
        except Exception as exc:  # the run always finishes: any error is a failed figure
            self.failures[name] = failure_reason(exc)
            print(f"    {name}: failed: {self.failures[name]}", flush=True)
            return None
        self.values[name] = value
        print(f"    {name}: {value:.4g}", flush=True)
        return value

    def measure_round(self, name: str, function: Callable[[], float]) -> None:
        """One round of a figure: its value is the median of the rounds that succeeded; it
        fails only if every round did."""
        try:
            value = function()
        except Exception as exc:
            reason = failure_reason(exc)
            print(f"    {name}: failed: {reason}", flush=True)
            if name not in self.values:
                self.failures[name] = reason
            return
        self.rounds.setdefault(name, []).append(value)
        self.values[name] = statistics.median(self.rounds[name])
        self.failures.pop(name, None)
        print(f"    {name}: {value:.4g}", flush=True)


def failure_reason(exc: Exception) -> str:
    if isinstance(exc, Failed):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


def measure_drain_ceiling(project: str, count: int, slots: int,
                          on_acked: Callable[[int], None] | None = None) -> float:
    """The emulator's own drain rate for a consumer that may hold ``slots`` messages.

    google-cloud-pubsub alone, no Celery: ``slots`` threads each Pull one message and ack it,
    like a worker with ``concurrency x multiplier`` prefetch and no-op tasks whose every ack
    frees one slot. Messages per second over a queued backlog of ``count``. ``on_acked`` is
    told the running total after every ack (bench/scale.py follows the rate through the drain).
    """
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, "ceiling")
    path = subscriber.subscription_path(project, "ceiling")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=path, topic=topic)
    try:
        for future in [publisher.publish(topic, b"x" * 600) for _ in range(count)]:
            future.result(timeout=30)
        time.sleep(1.0)  # as for the workers, the backlog is queued well before the drain
        left = [count]
        lock = threading.Lock()
        finished: list[float] = []  # when the last message was acked (the other thread's
        # Pull then waits out its timeout on an empty queue: not part of the drain)

        def consume() -> None:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                response = subscriber.pull(
                    request={"subscription": path, "max_messages": 1}, timeout=10, retry=None,
                )
                ack_ids = [m.ack_id for m in response.received_messages]
                if ack_ids:
                    subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
                    with lock:
                        left[0] -= len(ack_ids)
                        if left[0] <= 0:
                            finished.append(time.perf_counter())
                        if on_acked is not None:
                            on_acked(count - left[0])

        threads = [threading.Thread(target=consume, daemon=True) for _ in range(slots)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        budget = max(120.0, count / 50)
        for thread in threads:
            thread.join(budget)
        if not finished:
            raise Failed(f"{left[0]} of {count} messages not drained in {budget:.0f} s")
        return count / (finished[0] - started)
    finally:
        subscriber.close()
        publisher.stop()


# --- processes ---------------------------------------------------------------------------
def process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return found


#: Milliseconds of CPU time in one clock tick (/proc's unit).
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of the processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
    return total


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the bare client's floor -------------------------------------------------------------
def measure_floor(project: str, samples: int) -> dict[str, list[float]]:
    """publish -> delivery with google-cloud-pubsub alone: unary Pull waiting, StreamingPull."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1)  # no 10 ms batching wait
    )
    subscriber = pubsub_v1.SubscriberClient()
    topics, paths = {}, {}
    for kind in ("pull", "streaming"):  # a topic each: no message reaches the other's queue
        topics[kind] = publisher.topic_path(project, f"floor-{kind}")
        publisher.create_topic(name=topics[kind])
        paths[kind] = subscriber.subscription_path(project, f"floor-{kind}")
        subscriber.create_subscription(name=paths[kind], topic=topics[kind])
    results: dict[str, list[float]] = {"pull": [], "streaming": [], "publish": []}
    warmup = 3

    def publish(kind: str) -> float:
        sent = time.time()
        publisher.publish(topics[kind], b"x").result(timeout=10)
        results["publish"].append(time.time() - sent)
        return sent

    # Unary Pull: one Pull waiting on the server, then publish.
    def pull(arrived: list[float]) -> None:
        response = subscriber.pull(
            request={"subscription": paths["pull"], "max_messages": 1}, timeout=10, retry=None,
        )
        arrived.append(time.time())
        if response.received_messages:
            subscriber.acknowledge(
                request={"subscription": paths["pull"],
                         "ack_ids": [m.ack_id for m in response.received_messages]}
            )

    for i in range(warmup + samples):
        arrived: list[float] = []
        thread = threading.Thread(target=pull, args=(arrived,), daemon=True)
        thread.start()
        time.sleep(0.3 + random.random() * 0.2)  # noqa: S311 - jitter, not crypto
        sent = publish("pull")
        thread.join(12)
        if arrived and i >= warmup:
            results["pull"].append(arrived[0] - sent)
    # StreamingPull (the high-level client's subscribe()), the stream open and idle.
    arrivals: queue_module.Queue[float] = queue_module.Queue()

    def callback(message: Any) -> None:
        arrivals.put(time.time())
        message.ack()

    future = subscriber.subscribe(paths["streaming"], callback)
    try:
        time.sleep(1.0)
        for i in range(warmup + samples):
            time.sleep(0.3 + random.random() * 0.2)  # noqa: S311
            while not arrivals.empty():  # nothing stale may pass for this sample's arrival
                arrivals.get_nowait()
            sent = publish("streaming")
            with contextlib.suppress(queue_module.Empty):
                arrived_at = arrivals.get(timeout=10)
                if i >= warmup:
                    results["streaming"].append(arrived_at - sent)
    finally:
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        subscriber.close()
        publisher.stop()
    return results


PUBLISH_RTT_SAMPLES = 300
# The emulator (a JVM) compiles its Publish path over its first ~2,000 calls: 1.5 ms -> 0.6 ms
# per call, measured. The start round warms it, so the first broker measured (ours) does not
# pay the warm-up for the others, and none pays what hosted Pub/Sub never shows.
PUBLISH_RTT_WARMUP = 3000


def measure_publish_round_trip(project: str) -> list[float]:
    """One Publish call on the client's generated gRPC stub, one message, to a topic with a
    subscription (so the emulator stores it, as for a queue): what a confirmed publish one
    at a time cannot go below on this emulator. No batching thread, no retry wrapper."""
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, "floor-publish")
    publisher.create_topic(name=topic)
    subscriber.create_subscription(
        name=subscriber.subscription_path(project, "floor-publish"), topic=topic
    )
    stub = publisher.api.transport.publish
    metadata = (("x-goog-request-params", f"topic={topic}"),)
    samples = []
    for i in range(PUBLISH_RTT_WARMUP + PUBLISH_RTT_SAMPLES):
        request = pubsub_v1.types.PublishRequest(
            topic=topic, messages=[pubsub_v1.types.PubsubMessage(data=b"x" * 600)]
        )
        started = time.perf_counter()
        stub(request, timeout=10, metadata=metadata)
        if i >= PUBLISH_RTT_WARMUP:
            samples.append(time.perf_counter() - started)
    subscriber.close()
    publisher.stop()
    return samples


# --- one broker --------------------------------------------------------------------------
@dataclass
class BrokerRun:
    name: str
    env: dict[str, str]
    ledger_url: str
    workdir: Path
    sizes: Sizes
    prefetch_multiplier: int
    server_pid: int | None = None  # the broker's server (emulator or redis-server)
    figures: Figures = field(default_factory=Figures)
    worker: Any = None
    app: Any = None
    #: The OTLP endpoint this run's spans are exported to (``--tracing``), or None.
    otlp_endpoint: str | None = None

    @contextlib.contextmanager
    def tracing(self) -> Iterator[None]:
        """Tracing on in this (the publishing) process for the block, when the run traces."""
        if self.otlp_endpoint is None:
            yield
            return
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        from vividly_tasks.worker import tracing

        endpoint = self.otlp_endpoint
        tracing.configure(self.app, exporters=[
            lambda: OTLPSpanExporter(endpoint=endpoint, insecure=True)])
        try:
            yield
        finally:
            tracing.unconfigure()

    @property
    def ledger(self) -> redis.Redis:
        return redis.Redis.from_url(self.ledger_url)

    # The publishing app lives in this process; settings passed explicitly, not from env.
    def make_app(self) -> Any:
        from vividly_tasks import create_app
        from vividly_tasks.lessons.settings import Settings

        settings = Settings(
            broker_url=self.env["BROKER_URL"],
            result_backend=self.env["RESULT_BACKEND"],
            data_dir=Path(self.env["VIVIDLY_DATA_DIR"]),
            worker_prefetch_multiplier=self.prefetch_multiplier,
            worker_concurrency=2,
            log_format="text",
        )
        app = create_app(settings)
        app.conf.broker_connection_timeout = 10
        return app

    def publish(self) -> float:
        task = self.app.tasks["bench.noop"]
        declare_task_queue(self.app)
        task.apply_async()  # connect and warm up outside the timing
        self.ledger.delete(DONE_KEY)
        count = self.sizes.tasks
        with self.app.producer_or_acquire() as producer:
            started = time.perf_counter()
            for _ in range(count - 1):
                task.apply_async(producer=producer)
            elapsed = time.perf_counter() - started
        return (count - 1) / elapsed

    def publish_aside(self, *, pipelined: bool, results: bool) -> float:
        """Publish rate to a queue of its own (no worker drains it, so the drain figures are
        unchanged). ``pipelined``: ours with ``publish_in_flight``, timed until every message
        is confirmed. ``results`` off: ``ignore_result=True``, so the result backend's
        per-task subscription (a Redis round trip on every broker) is not in the figure."""
        app = self.make_app()
        if pipelined:
            app.conf.broker_transport_options = {
                **app.conf.broker_transport_options, "publish_in_flight": PIPELINED_IN_FLIGHT,
            }
        task = app.tasks["bench.noop"]
        options = {"queue": ASIDE_QUEUE, "ignore_result": not results}
        try:
            task.apply_async(**options)  # connect, declare and warm up
            count = self.sizes.tasks
            with app.producer_or_acquire() as producer:
                flush = getattr(producer.channel, "flush_publishes", lambda: None)
                flush()
                started = time.perf_counter()
                for _ in range(count - 1):
                    task.apply_async(producer=producer, **options)
                flush()  # pipelined: confirmed, all of them
                elapsed = time.perf_counter() - started
            return (count - 1) / elapsed
        finally:
            app.close()

    def start_worker(self) -> float:
        from harness.workers import WorkerProcess

        command = [
            sys.executable, "-m", "celery", "-A", "vividly_tasks", "worker",
            "--include", "bench.transport", "--hostname", f"bench-{self.name}@%h",
            "--concurrency", "2", "--pool", "prefork", "--loglevel", "INFO", "-E",
            "--prefetch-multiplier", str(self.prefetch_multiplier),
        ]
        self.ledger.delete(READY_KEY)
        self.worker = WorkerProcess(command, self.env, self.workdir / f"worker-{self.name}.log")
        started = time.time()
        self.worker.start()
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while (ready := self.ledger.get(READY_KEY)) is None:
            self.check_worker_alive()
            if time.monotonic() > deadline:
                raise Failed(f"worker not ready in {WORKER_READY_TIMEOUT:.0f} s")
            time.sleep(0.01)
        return float(ready) - started

    def check_worker_alive(self) -> None:
        process = self.worker.process if self.worker else None
        if process is None:
            raise Failed("no worker")
        if process.poll() is not None:
            tail = self.worker.logs().strip().splitlines()[-1:] or ["(no log)"]
            raise Failed(f"worker exited with {process.returncode}: {tail[0][:120]}")

    def drain(self, expected: int) -> float:
        ready = float(self.ledger.get(READY_KEY) or 0)
        done = 0
        last_progress = time.monotonic()
        worker_pids = process_tree(self.worker.pid)
        server_pids = process_tree(self.server_pid) if self.server_pid else []
        done_before = int(self.ledger.llen(DONE_KEY))
        worker_ticks, server_ticks = cpu_ticks(worker_pids), cpu_ticks(server_pids)
        while done < expected:
            count = int(self.ledger.llen(DONE_KEY))
            if count > done:
                done, last_progress = count, time.monotonic()
            elif time.monotonic() - last_progress > STALL_TIMEOUT:
                raise Failed(f"{done} of {expected} done, then none for {STALL_TIMEOUT:.0f} s")
            self.check_worker_alive()
            time.sleep(0.02)
        measured = expected - done_before
        if measured > 0:  # CPU milliseconds per task while the backlog drained
            self.figures.values["drain_cpu_worker"] = (
                (cpu_ticks(worker_pids) - worker_ticks) * TICK_MS / measured)
            if server_pids:
                self.figures.values["drain_cpu_server"] = (
                    (cpu_ticks(server_pids) - server_ticks) * TICK_MS / measured)
        times = sorted(float(t) for t in self.ledger.lrange(DONE_KEY, 0, -1))
        before_ready = sum(1 for t in times if t < ready)
        if before_ready:
            self.figures.notes.append(f"{before_ready} backlog task(s) done before worker_ready")
        if len(times) > expected:
            self.figures.notes.append(f"drain: {len(times) - expected} extra run(s) (duplicates)")
        return expected / (times[expected - 1] - ready)

    def latency(self) -> list[float]:
        task = self.app.tasks["bench.stamp"]
        ledger = self.ledger
        ledger.delete(STAMP_KEY)
        samples: list[float] = []
        misses = 0
        with self.app.producer_or_acquire() as producer:
            for i in range(self.sizes.warmup + self.sizes.samples):
                time.sleep(0.2 + random.random() * 0.3)  # noqa: S311 - the worker is idle
                token = uuid.uuid4().hex
                sent = time.time()
                task.apply_async((token,), producer=producer)
                deadline = time.monotonic() + SAMPLE_TIMEOUT
                while True:
                    remaining = deadline - time.monotonic()
                    item = ledger.blpop([STAMP_KEY], timeout=max(0.01, remaining))
                    if item is not None:
                        got, started = json.loads(item[1])
                        if got == token:
                            if i >= self.sizes.warmup:
                                samples.append(started - sent)
                            break
                    if time.monotonic() >= deadline:
                        misses += 1
                        break
                if misses >= 3:
                    raise Failed(f"{misses} tasks did not start within {SAMPLE_TIMEOUT:.0f} s")
        if misses:
            self.figures.notes.append(f"latency: {misses} sample(s) timed out, left out")
        if not samples:
            raise Failed("no sample")
        return samples

    def idle_cpu(self) -> float:
        self.check_worker_alive()
        time.sleep(2.0)  # let the latency run's leftovers (acks, events) settle
        pids = process_tree(self.worker.pid)
        before, started = cpu_ticks(pids), time.monotonic()
        time.sleep(self.sizes.idle_seconds)
        pids = sorted(set(pids) | set(process_tree(self.worker.pid)))
        after, elapsed = cpu_ticks(pids), time.monotonic() - started
        self.check_worker_alive()
        return 100.0 * (after - before) / os.sysconf("SC_CLK_TCK") / elapsed

    def ping_once(self) -> float:
        command = [sys.executable, "-m", "celery", "-A", "vividly_tasks", "inspect", "ping"]
        env = {**self.env, "PYTHONPATH": str(REPO_ROOT)}
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                timeout=PING_TIMEOUT, check=False,
            )
        except subprocess.TimeoutExpired:
            raise Failed(f"CLI still running after {PING_TIMEOUT:.0f} s (killed)") from None
        wall = time.monotonic() - started
        if result.returncode != 0 or "pong" not in result.stdout:
            said = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
            raise Failed(f"no pong in {wall:.1f} s (exit {result.returncode}: {said[0][:100]})")
        return wall

    def ping(self) -> float:
        return statistics.median(self.ping_once() for _ in range(self.sizes.pings))

    def shutdown(self) -> float:
        self.check_worker_alive()
        started = time.monotonic()
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failed(f"still running {SHUTDOWN_TIMEOUT:.0f} s after SIGTERM") from None
        return time.monotonic() - started

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill_group()
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.close()
            with contextlib.suppress(Exception):
                self.app.pool.force_close_all()


def run_broker(run: BrokerRun) -> Figures:
    figures = run.figures
    print(f"== {run.name}: {run.env['BROKER_URL']} (load {load_average()})", flush=True)
    stack = contextlib.ExitStack()
    try:
        run.app = run.make_app()
        stack.enter_context(run.tracing())
        # The backlog the worker drains; the publish figures come from publish_rounds().
        published = figures.measure("publish_backlog", run.publish)
        figures.measure("start_ready", run.start_worker)
        if run.worker is not None and run.worker.process.poll() is None:
            expected = run.sizes.tasks if published is not None else 0
            if expected:
                figures.measure("drain", lambda: run.drain(expected))
            else:
                figures.failures["drain"] = "nothing was queued (publish failed)"
            samples: list[float] = []

            def latency_median() -> float:
                samples.extend(run.latency())
                return statistics.median(samples)

            if figures.measure("latency_median", latency_median) is not None:
                figures.values["latency_p95"] = percentile(samples, 95)
                figures.values["latency_samples"] = len(samples)
            else:
                figures.failures["latency_p95"] = figures.failures["latency_median"]
            figures.measure("idle_cpu", run.idle_cpu)
            figures.measure("ping", run.ping)
            figures.measure("shutdown", run.shutdown)
        else:
            for name in ("drain", "latency_median", "latency_p95", "idle_cpu", "ping",
                         "shutdown"):
                figures.failures[name] = "no worker"
    finally:
        stack.close()
        run.close()
    return figures


def publish_rounds(runs: list[BrokerRun], rounds: int) -> None:
    """Every publish figure of every broker (and of Celery alone, Kombu's in-memory transport:
    what Celery costs with no broker, the rate no broker's publish can exceed here), measured
    ``rounds`` times with the brokers interleaved in a rotating order; each figure is the
    median of its rounds. This machine's speed drifts over minutes (steal from 4 to 20 %,
    measured), so a broker measured minutes after another ran on a different machine: one
    sample each, the confirmed publish ratio ranged 0.42-1.00x over 19 runs."""
    from kombu import pools

    pools.reset()  # the broker runs closed their apps' connection pools, which Kombu shares
    for index in range(rounds):
        order = rotated(runs, index)
        print(f"== publish round {index + 1}/{rounds}: {', '.join(r.name for r in order)} "
              f"(load {load_average()})", flush=True)
        for run in order:
            print(f"  {run.name}", flush=True)
            for key, options in PUBLISH_MEASURES.items():
                if options["pipelined"] and run.name not in OURS:
                    continue
                with run.tracing():
                    run.figures.measure_round(key, functools.partial(run.publish_aside,
                                                                     **options))


def declare_task_queue(app: Any) -> None:
    """Create the app's task queue (topic/subscription) so that nothing published is dropped."""
    with app.connection_for_write() as connection:
        task_queue = app.amqp.queues[app.conf.task_default_queue]
        task_queue(connection.default_channel).declare()


def rotated(items: list[T], by: int) -> list[T]:
    """``items`` starting at index ``by`` (mod their number): who goes first takes turns."""
    shift = by % len(items)
    return items[shift:] + items[:shift]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


# --- the report ----------------------------------------------------------------------------
ROWS = (
    # key, label, unit scale, format, better ("high"/"low")
    ("publish", "publish rate, apply_async from one process (tasks/s)", 1.0, "{:,.0f}", "high"),
    ("publish_pipelined", "publish rate, pipelined (`publish_in_flight`), until all confirmed "
     "(tasks/s; ratio to the other's publish)", 1.0, "{:,.0f}", "high"),
    ("publish_no_results", "publish rate, `ignore_result=True` (no result subscription per "
     "task) (tasks/s)", 1.0, "{:,.0f}", "high"),
    ("publish_pipelined_no_results", "publish rate, pipelined, `ignore_result=True` (tasks/s; "
     "ratio to the other's `ignore_result` publish)", 1.0, "{:,.0f}", "high"),
    ("drain", "drain {tasks:,} queued no-op tasks (tasks/s)", 1.0, "{:,.0f}", "high"),
    ("drain_cpu_worker", "CPU while draining: worker processes (ms per task)", 1.0, "{:.2f}",
     "low"),
    ("drain_cpu_server", "CPU while draining: broker server, emulator or redis-server "
     "(ms per task)", 1.0, "{:.2f}", "low"),
    ("latency_median", "apply_async -> task starts, median (ms)", 1000.0, "{:.1f}", "low"),
    ("latency_p95", "apply_async -> task starts, p95 (ms)", 1000.0, "{:.1f}", "low"),
    ("latency_over_floor", "median minus the bare client's floor (ms)", 1000.0, "{:+.1f}",
     "low"),
    ("idle_cpu", "idle worker CPU over {idle:g} s (% of one core)", 1.0, "{:.2f}", "low"),
    ("shutdown", "warm shutdown of an idle worker, SIGTERM -> exit (s)", 1.0, "{:.2f}", "low"),
    ("ping", "`celery -A vividly_tasks inspect ping` CLI, wall (s, median of {pings})", 1.0,
     "{:.2f}", "low"),
    ("start_ready", "worker start -> ready (s)", 1.0, "{:.2f}", "low"),
)


def cell(figures: Figures | None, key: str, scale: float, fmt: str) -> str:
    if figures is None:
        return "not run"
    if key in figures.values:
        return fmt.format(figures.values[key] * scale)
    if key not in figures.failures:
        return "-"  # not a figure of this broker (pipelined publishing is ours)
    return f"failed: {figures.failures[key]}"


def ratio(a: Figures | None, b: Figures | None, key: str, *, same_key: bool = False) -> str:
    """``a``'s figure over ``b``'s; a pipelined publish against ``b``'s plain one unless
    ``same_key`` (tracing on against off)."""
    against = None if same_key else PIPELINED_AGAINST.get(key)
    if against is not None and a is not None and b is not None:
        if key not in a.values or against not in b.values:
            return "-"
        return f"{a.values[key] / b.values[against]:.2f}x"  # against the other's publish
    if a is None or b is None or key not in a.values or key not in b.values:
        return "-"
    if key == "latency_over_floor" or b.values[key] == 0:
        return "-"
    return f"{a.values[key] / b.values[key]:.2f}x"


def ratios(results: dict[str, Figures], key: str) -> list[str]:
    """The ratio columns of a row: ours to Redis and to gcpubsub; tracing on to off."""
    ours = results.get("ours")
    cells = [ratio(ours, results.get("redis"), key), ratio(ours, results.get("gcpubsub"), key)]
    if TRACED in results:
        cells.append(ratio(results[TRACED], ours, key, same_key=True))
    return cells


def publish_round_lines(results: dict[str, Figures], names: list[str], sizes: Sizes) -> list[str]:
    """How the publish rows were measured, and every round's figure."""
    rounds = max((len(v) for f in results.values() for v in f.rounds.values()), default=0)
    if not rounds:
        return []
    per_round = "; ".join(
        f"{name} {key} " + ", ".join(f"{x:,.0f}" for x in results[name].rounds[key])
        for name in names for key in PUBLISH_MEASURES if key in results[name].rounds
    )
    return [f"- publish rows: the median of {rounds} rounds of {sizes.tasks:,} tasks each, "
            "every broker once per round in a rotating order (the machine's speed drifts "
            f"over minutes); per round, tasks/s: {per_round}"]


def publish_bounds(results: dict[str, Figures],
                   floors: dict[str, dict[str, list[float]]]) -> list[str]:
    """How fast any broker's publish could be here: Celery's own cost (the in-memory transport's
    rate) caps every publish, and a confirmed one also waits one Publish round trip."""
    alone, redis_ = results.get(CELERY_ONLY), results.get("redis")
    # Per round (a cold and a warm emulator); the bound below takes the faster round's.
    rtts = {name: statistics.median(f["publish_rtt"])
            for name, f in floors.items() if f.get("publish_rtt")}
    rtt = min(rtts.values()) if rtts else None
    lines = []
    if rtts:
        lines.append(
            "- bare client, one Publish round trip on its generated gRPC stub (no batching "
            "thread, no retry wrapper), median per round: "
            + ", ".join(f"{name} {1000 * value:.2f} ms" for name, value in rtts.items())
        )
    if alone is None or redis_ is None:
        return lines
    for key, what in (("publish", "with results"), ("publish_no_results", "`ignore_result`")):
        if key not in alone.values or key not in redis_.values:
            continue
        celery_rate, redis_rate = alone.values[key], redis_.values[key]
        text = (f"- Celery alone ({what}, the same app over Kombu's in-memory transport): "
                f"{celery_rate:,.0f} tasks/s, {celery_rate / redis_rate:.2f}x Redis's "
                f"{redis_rate:,.0f}. Every broker adds its own cost to Celery's, so a publish, "
                f"pipelined or not, gets about this far at most")
        if rtt is not None:
            confirmed = 1 / (1 / celery_rate + rtt)
            text += (f". One confirmed at a time also waits a Publish round trip: about "
                     f"{confirmed:,.0f} tasks/s, {confirmed / redis_rate:.2f}x Redis's")
        lines.append(text)
    return lines


def verdicts(results: dict[str, Figures], floor: float | None) -> list[str]:
    ours, redis_ = results.get("ours"), results.get("redis")
    if ours is None:
        return []
    v = ours.values
    lines = []

    def line(ok: bool | None, text: str) -> None:
        mark = "unknown" if ok is None else ("met" if ok else "**missed**")
        lines.append(f"- {mark}: {text}")

    if "drain" in v and redis_ and "drain" in redis_.values:
        r = redis_.values["drain"]
        line(v["drain"] >= 0.9 * r,
             f"drain within 10 % of Redis's: {v['drain']:,.0f} vs {r:,.0f} tasks/s "
             f"({100 * (v['drain'] / r - 1):+.0f} %)")
    else:
        line(None, "drain within 10 % of Redis's: a figure is missing")
    if "latency_median" in v and floor is not None:
        line(v["latency_median"] - floor <= 0.005,
             f"latency median within 5 ms of the floor: {1000 * v['latency_median']:.1f} ms vs "
             f"floor {1000 * floor:.1f} ms ({1000 * (v['latency_median'] - floor):+.1f} ms)")
    else:
        line(None, "latency within 5 ms of the floor: a figure is missing")
    if "shutdown" in v:
        line(v["shutdown"] < 2.0, f"idle shutdown under 2 s: {v['shutdown']:.2f} s")
    if "ping" in v:
        line(v["ping"] < 2.0, f"`inspect ping` CLI under 2 s: {v['ping']:.2f} s")
    if "idle_cpu" in v and redis_ and "idle_cpu" in redis_.values:
        line(v["idle_cpu"] <= redis_.values["idle_cpu"],
             f"idle CPU no more than Redis's: {v['idle_cpu']:.2f} % vs "
             f"{redis_.values['idle_cpu']:.2f} % of a core")
    return lines


def publish_verdicts(results: dict[str, Figures]) -> list[str]:
    """The publish targets (pipelined at least 2x Redis's rate, confirmed at least 0.9x),
    each beside the most that Celery alone allows here."""
    ours, redis_, alone = (results.get(n) for n in ("ours", "redis", CELERY_ONLY))
    if ours is None or redis_ is None:
        return []
    lines = []
    for key, against, bar, what in (
        ("publish_pipelined", "publish", 2.0, "pipelined publish"),
        ("publish_pipelined_no_results", "publish_no_results", 2.0,
         "pipelined publish, `ignore_result`"),
        ("publish", "publish", 0.9, "confirmed publish"),
    ):
        if key not in ours.values or against not in redis_.values:
            lines.append(f"- unknown: {what} >= {bar:g}x Redis's: a figure is missing")
            continue
        got = ours.values[key] / redis_.values[against]
        paired = [a / b for a, b in zip(ours.rounds.get(key, []),
                                        redis_.rounds.get(against, []), strict=False)]
        if len(paired) > 1:
            got_text = (f"{got:.2f}x (ratio of the medians; per round "
                        f"{min(paired):.2f}-{max(paired):.2f}x)")
        else:
            got_text = f"{got:.2f}x"
        cap = ""
        if alone is not None and against in alone.values:
            cap = (f"; Celery alone is "
                   f"{alone.values[against] / redis_.values[against]:.2f}x")
        lines.append(f"- {'met' if got >= bar else '**missed**'}: {what} >= {bar:g}x Redis's: "
                     f"{got_text}{cap}")
    return lines


def source_description() -> str:
    """Which code was measured: the package version, the tree's git HEAD and whether
    vividly_tasks/ differs from it."""
    try:
        version = f"vividly-tasks {metadata.version('vividly-tasks')}, "
    except metadata.PackageNotFoundError:
        version = ""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True, timeout=10).stdout
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--",
                                "vividly_tasks"], capture_output=True, text=True, check=True,
                               timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{version}not a git checkout"
    state = "with uncommitted changes in vividly_tasks/" if dirty.strip() else "clean"
    return f"{version}commit {head.strip()} ({state})"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                return text_line.split(":", 1)[1].strip()
    return "unknown"


def package_versions(packages: tuple[str, ...]) -> list[str]:
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return versions


def redis_server_version() -> str:
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                            check=False).stdout.split()
    return next((w.split("=", 1)[1] for w in server if w.startswith("v=")), "?")


def emulator_version() -> str:
    jars = sorted(Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib").glob("*.jar"))
    return jars[0].stem if jars else "(not installed)"


def machine() -> list[str]:
    return [
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(package_versions(PACKAGES))}",
        f"- Redis server {redis_server_version()}; Pub/Sub emulator {emulator_version()}",
    ]


def render(results: dict[str, Figures], floors: dict[str, dict[str, list[float]]],
           sizes: Sizes, args: argparse.Namespace, loads: list[str], stamp_: str,
           command: str) -> str:
    pooled = {k: pooled_values(floors, k) for k in ("pull", "streaming")}
    floor_medians = {k: statistics.median(v) for k, v in pooled.items() if v}
    floor = min(floor_medians.values()) if floor_medians else None
    for figures in results.values():
        if floor is not None and "latency_median" in figures.values:
            figures.values["latency_over_floor"] = figures.values["latency_median"] - floor
        elif "latency_over_floor" not in figures.failures:
            figures.failures["latency_over_floor"] = (
                "no floor" if floor is None else figures.failures.get("latency_median", "-")
            )
    names = [b for b in COLUMNS if b in results]
    header = ("| measure | " + " | ".join(TITLES[n] for n in names)
              + " | ours / Redis | ours / gcpubsub |"
              + (" tracing on / off |" if TRACED in results else ""))
    lines = [header, "|---" * (len(names) + 3 + (TRACED in results)) + "|"]
    ours = results.get("ours")
    for key, template, scale, fmt, _ in ROWS:
        label = template.format(tasks=sizes.tasks, idle=sizes.idle_seconds, pings=sizes.pings)
        cells = [cell(results.get(n), key, scale, fmt) for n in names]
        cells += ratios(results, key)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    floor_lines = []
    for kind, title in (("pull", "unary Pull waiting"), ("streaming", "StreamingPull open")):
        values = pooled.get(kind) or []
        if values:
            per_round = ", ".join(
                f"{name} {1000 * statistics.median(f[kind]):.1f}"
                for name, f in floors.items() if f.get(kind)
            )
            floor_lines.append(
                f"- bare google-cloud-pubsub client, publish -> delivery with a {title}: "
                f"median {1000 * statistics.median(values):.1f} ms, "
                f"p95 {1000 * percentile(values, 95):.1f} ms over {len(values)} samples "
                f"(medians per round, ms: {per_round})"
            )
        else:
            floor_lines.append(f"- bare client floor ({title}): failed")
    publish_rtt = pooled_values(floors, "publish")
    if publish_rtt:
        floor_lines.append(
            "- bare client, one confirmed publish (`publish().result()`, batching off): median "
            f"{1000 * statistics.median(publish_rtt):.1f} ms, i.e. at most "
            f"{1 / statistics.median(publish_rtt):,.0f} confirmed publishes/s from one thread"
        )
    floor_lines += publish_round_lines(results, names, sizes)
    floor_lines += publish_bounds(results, floors)
    if floor is not None:
        floor_lines.append(f"- the floor used for the target: {1000 * floor:.1f} ms "
                           "(the lower of the two medians)")
    ceiling = floors.get("ceiling", {})
    if ceiling.get("drain"):
        rate, slots = ceiling["drain"][0], int(ceiling["slots"][0])
        share = ""
        if ours is not None and "drain" in ours.values:
            share = f"; ours drained at {100 * ours.values['drain'] / rate:.0f} % of it"
        floor_lines.append(
            f"- bare client, the emulator's drain ceiling for a consumer allowed {slots} "
            f"messages (the worker's prefetch): {slots} threads each Pull 1 message and ack "
            f"it, no Celery: {rate:,.0f} msg/s over {sizes.tasks:,} queued{share}"
        )
    notes = [f"- {name}: {note}" for name in names for note in results[name].notes]
    begin, end = markers(args.prefetch_multiplier)
    text = [
        begin,
        f"Run {stamp_} with `{command}`"
        + (" (**quick smoke run, small N**)" if args.quick else "") + ".",
        "",
        f"- code measured: {args.describe or source_description()}",
        *machine(),
        f"- load average (1/5/15 min) at start: {loads[0]}; at end: {loads[-1]} "
        "(other engineers' tests share this 2-core machine)",
        f"- harness: prefork worker `--concurrency 2 --prefetch-multiplier "
        f"{args.prefetch_multiplier} -E`, acks late (the app's setting), results in Redis "
        "for all brokers, one emulator and one Redis started by the script; a fresh emulator "
        "project per Pub/Sub broker, separate Redis databases per broker; latency: "
        f"{sizes.warmup} warm-up + {sizes.samples} samples, the worker idle 0.2-0.5 s "
        "before each",
        "",
        *lines,
        "",
        *floor_lines,
        "",
        "Targets (ours, against Redis and the bare client's floor):",
        "",
        *verdicts(results, floor),
        "",
        "Publish targets (ours, against Redis):",
        "",
        *publish_verdicts(results),
    ]
    if notes:
        text += ["", "Run notes:", "", *notes]
    text.append(end)
    return "\n".join(text)


def pooled_values(floors: dict[str, dict[str, list[float]]], kind: str) -> list[float]:
    return [x for f in floors.values() for x in f.get(kind, [])]


def write_doc(block: str, prefetch_multiplier: int) -> None:
    replace_block(DOC_PATH, *markers(prefetch_multiplier), block, header=(
        "# Transport benchmark: `pubsub://` against Kombu's `gcpubsub` and Redis\n\n"
        "Produced by `bench/transport.py` (see bench/README.md); the block between the markers "
        "is rewritten by each run.\n\n"
    ))


def replace_block(path: Path, begin: str, end: str, block: str, *, header: str) -> None:
    """Put ``block`` (which starts with ``begin`` and ends with ``end``) in place of the
    doc's block between those markers, or append it; a new doc starts with ``header``."""
    text = path.read_text() if path.exists() else header
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += block + "\n"
    path.write_text(text)


# --- main --------------------------------------------------------------------------------
def broker_url(name: str, project: str, redis_port: int) -> str:
    if name in OURS:
        return f"pubsub://{project}"
    if name == "gcpubsub":
        return f"gcpubsub://projects/{project}"
    if name == CELERY_ONLY:
        return "memory://"
    return f"redis://127.0.0.1:{redis_port}/1"


def broker_env(name: str, index: int, project: str, redis_port: int, workdir: Path,
               prefetch_multiplier: int) -> dict[str, str]:
    """The worker's (and the CLI's) environment: settings of vividly_tasks/settings.py."""
    base = f"redis://127.0.0.1:{redis_port}"
    return {
        **os.environ,
        "BROKER_URL": broker_url(name, project, redis_port),
        "RESULT_BACKEND": f"{base}/{10 + index}",
        LEDGER_ENV: f"{base}/{20 + index}",
        "VIVIDLY_DATA_DIR": str(workdir / f"data-{name}"),
        "WORKER_PREFETCH_MULTIPLIER": str(prefetch_multiplier),
        "WORKER_CONCURRENCY": "2",
        "LOG_FORMAT": "text",
        "PYTHONPATH": str(REPO_ROOT),
    }


def floor_round(floors: dict[str, dict[str, list[float]]], label: str, run_id: str,
                sizes: Sizes) -> None:
    try:
        floors[label] = measure_floor(f"bench-{run_id}-floor-{label}", sizes.floor_samples)
        floors[label]["publish_rtt"] = measure_publish_round_trip(f"bench-{run_id}-rtt-{label}")
        print(f"== floor ({label}): " + ", ".join(
            f"{k} {1000 * statistics.median(v):.1f} ms"
            for k, v in floors[label].items() if v and k != "publish"), flush=True)
    except Exception as exc:
        print(f"== floor ({label}) failed: {exc}", flush=True)


def ceiling_round(floors: dict[str, dict[str, list[float]]], run_id: str, sizes: Sizes,
                  slots: int) -> None:
    try:
        rate = measure_drain_ceiling(f"bench-{run_id}-ceiling", sizes.tasks, slots)
    except Exception as exc:
        print(f"== emulator drain ceiling failed: {exc}", flush=True)
        return
    floors["ceiling"] = {"drain": [rate], "slots": [float(slots)]}
    print(f"== emulator drain ceiling, {slots} slots: {rate:,.0f} msg/s", flush=True)


@contextlib.contextmanager
def started_services(workdir: Path) -> Iterator[tuple[Any, Any]]:
    """Redis and the Pub/Sub emulator on free loopback ports (harness/services.py), for one
    run; stopped by PID at the end, whatever happened."""
    from harness.services import start_pubsub_emulator, start_redis

    services: list[Any] = []
    try:
        services.append(start_redis(workdir))
        services.append(start_pubsub_emulator(workdir))
        yield services[0], services[1]
    finally:
        for service in reversed(services):
            service.stop()


@contextlib.contextmanager
def otlp_receiver(wanted: bool) -> Iterator[int | None]:
    """``--tracing``: a loopback OTLP/gRPC receiver in a process of its own (its port), so
    that what receiving spans costs is not in the figures; stopped by PID at the end."""
    if not wanted:
        yield None
        return
    process = subprocess.Popen([sys.executable, "-m", "harness.otlp_receiver"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(10)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N: a smoke run")
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=BROKERS)
    parser.add_argument("--prefetch-multiplier", type=int, default=1,
                        help="the same for every broker (the product's default is 1)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--tracing", action="store_true",
                        help="also ours with OpenTelemetry on, spans exported over OTLP/gRPC "
                        "to a loopback receiver (the overhead of tracing)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file "
                        "(bench/all.py reads it)")
    parser.add_argument("--describe", help="what code is measured, for the doc "
                        "(default: the tree's git HEAD and whether vividly_tasks/ is clean)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the services get stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = QUICK if args.quick else FULL
    command = shlex.join([".venv/bin/python", "-m", "bench.transport", *sys.argv[1:]])
    for name in PRODUCT_ENV:
        os.environ.pop(name, None)
    loads = [load_average()]
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run_id = uuid.uuid4().hex[:6]
    results: dict[str, Figures] = {}
    floors: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        workdir = Path(tmp)
        with started_services(workdir) as (redis_server, emulator), \
                otlp_receiver(args.tracing) as receiver_port:
            os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{emulator.port}"
            print(f"emulator on {emulator.port}, redis on {redis_server.port}; "
                  f"load {loads[0]}", flush=True)

            floor_round(floors, "start", run_id, sizes)
            # The worker's prefetch: concurrency 2 times the multiplier.
            ceiling_round(floors, run_id, sizes, 2 * args.prefetch_multiplier)
            runs = []
            brokers = [*args.brokers, *([TRACED] if args.tracing else [])]
            for index, name in enumerate(brokers):
                project = f"bench-{run_id}-{index}"
                env = broker_env(name, index, project, redis_server.port, workdir,
                                 args.prefetch_multiplier)
                server = (redis_server if name == "redis" else emulator).process
                run = BrokerRun(name, env, env[LEDGER_ENV], workdir, sizes,
                                args.prefetch_multiplier, server_pid=server.pid if server else None)
                if name == TRACED:
                    run.otlp_endpoint = f"http://127.0.0.1:{receiver_port}"
                    env.update({TRACING_ENV: "1", "OTEL_TRACES_EXPORTER": "otlp",
                                "OTEL_EXPORTER_OTLP_ENDPOINT": run.otlp_endpoint,
                                "OTEL_EXPORTER_OTLP_INSECURE": "true"})
                runs.append(run)
                try:
                    run_broker(run)
                except Exception as exc:
                    run.figures.notes.append(f"run aborted: {type(exc).__name__}: {exc}")
            alone_env = broker_env(CELERY_ONLY, len(brokers), "", redis_server.port,
                                   workdir, args.prefetch_multiplier)
            runs.append(BrokerRun(CELERY_ONLY, alone_env, alone_env[LEDGER_ENV], workdir, sizes,
                                  args.prefetch_multiplier))
            # The broker runs are over (workers stopped); their publish rows are measured here.
            publish_rounds(runs, sizes.publish_rounds)
            results.update((run.name, run.figures) for run in runs)
            floor_round(floors, "end", run_id, sizes)
        loads.append(load_average())
    block = render(results, floors, sizes, args, loads, started_at, command)
    print(block)
    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "started_at": started_at, "loads": loads, "quick": args.quick,
            "code": args.describe or source_description(), "sizes": vars(sizes),
            "floors": floors, "results": {name: vars(f) for name, f in results.items()},
        }, indent=2) + "\n")
    if not args.no_write:
        write_doc(block, args.prefetch_multiplier)
        print(f"wrote {DOC_PATH}")


if __name__ == "__main__":
    main()
