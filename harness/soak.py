"""Chaos soak: content requests over Pub/Sub while job workers are killed, and nothing is lost.

A producer submits N content requests (mostly text, some short videos) over the Pub/Sub
emulator, a few of them published twice on purpose, with a burst of poison messages in the
middle (garbage bytes, JSON that is not a Kombu envelope, a Kombu message that is not a Celery
task, an unknown task, a pickle content type, an oversize request id, an oversize topic). Three
``vividly-worker job`` processes drain the queue; each is restarted as soon as it exits, while a
killer sends SIGKILL (to the whole process group, as a container dies) or SIGTERM (to the
worker, as Cloud Run stops it) to a random one every 2-10 s. When every request is finished the
killer stops, the workers are stopped, the leases of the killed ones are left to run out, and
one last worker drains what is left until it is idle. Then the soak checks:

- every valid request is ``completed``, and its pipeline completed once (the ``completed``
  outcomes per request, recorded by the workers in a Redis list: ``harness.apps.soak_probe``);
- storage holds exactly one artifact set per completed request and nothing else (no
  temporary files, no folders of requests that failed);
- every poison message is on the dead-letter topic with its reason, and nothing else is;
- nothing is left on the subscription.

This module is the orchestration (``run_soak``), given the services to run on:
tests/integration/soak/test_soak.py runs a short version with the test suite's services;
bench/soak.py, the long run's command line, starts its own.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from google.api_core.exceptions import DeadlineExceeded
from google.pubsub_v1 import PubsubMessage

from harness.apps.soak_probe import LEDGER_ENV, RUNS_KEY
from harness.workers import WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.lessons.models import ContentRequest
from vividly_tasks.lessons.requests import submit
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import TERMINAL
from vividly_tasks.lessons.storage import INCOMING_DIR
from vividly_tasks.lessons.tasks import GENERATE_CONTENT, send_generate_content
from vividly_tasks.transport import wire
from vividly_tasks.transport.clients import clients_for_this_process
from vividly_tasks.transport.naming import (
    dead_letter_id,
    resource_id,
    subscription_path,
    topic_path,
)

#: Settings the caller's shell might carry; the soak sets its own.
PRODUCT_ENV = ("BROKER_URL", "CELERY_BROKER_URL", "RESULT_BACKEND", "DATABASE_URL",
               "STORAGE_URL", "VIVIDLY_QUEUE", "LOG_FORMAT", "LOG_LEVEL")
TEXT_ARTIFACTS = frozenset({"lesson.md", "lesson.html", "manifest.json"})
VIDEO_ARTIFACTS = TEXT_ARTIFACTS | {"lesson.mp4"}
TOPICS = ("Photosynthesis", "Fractions", "The water cycle", "Volcanoes", "Magnetism",
          "Ancient Rome", "Plate tectonics", "Probability", "The solar system", "Poetry")
POISON_ATTRIBUTE = "soak_poison"
FINAL_DRAIN_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class SoakConfig:
    requests: int = 500
    video_share: float = 0.08
    duplicate_share: float = 0.05
    #: Requests are submitted evenly over this long, so the kills land while work goes on.
    publish_seconds: float = 180.0
    workers: int = 3
    concurrency: int = 1
    kill_interval: tuple[float, float] = (2.0, 10.0)
    #: The transport's ack deadline: how soon a SIGKILLed worker's messages come back.
    ack_deadline_seconds: int = 10
    #: The content claim's lease: how soon a SIGKILLed worker's claim can be taken over.
    lease_seconds: float = 5.0
    idle_timeout: float = 5.0
    #: Longest wait for every request to finish once the last one is submitted.
    finish_timeout: float = 600.0
    seed: int | None = None

    @classmethod
    def short(cls) -> SoakConfig:
        """The test suite's version: ~1 minute of chaos with the same kill interval."""
        return cls(requests=40, video_share=0.1, duplicate_share=0.1, publish_seconds=30.0,
                   finish_timeout=75.0)


@dataclass(frozen=True)
class SoakServices:
    """Where the soak runs: an emulator project, a Redis database, a content database."""

    emulator_host: str
    project: str
    redis_url: str
    database_url: str
    workdir: Path


@dataclass
class Poison:
    kind: str
    expect_reason: str
    task_id: str | None = None
    request_id: str | None = None


@dataclass
class SoakReport:
    requests: int = 0
    text: int = 0
    video: int = 0
    published_twice: int = 0
    poison: int = 0
    kills: int = 0
    sigkills: int = 0
    sigterms: int = 0
    worker_starts: int = 0
    deliveries: int = 0
    redeliveries: int = 0
    max_delivery_attempt: int = 0
    takeovers: int = 0
    suppressed_finished: int = 0
    suppressed_claimed: int = 0
    suppressed_lost_claim: int = 0
    dead_lettered: int = 0
    final_drain_deliveries: int = 0
    left_queued: int = 0
    lost: list[str] = field(default_factory=list)
    executed_twice: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    #: Partial copies under ``.incoming/`` of a worker SIGKILLed while it wrote an artifact:
    #: never visible as artifacts (the store lists and serves none of them), removed by a
    #: worker's start once stale (LocalStorage.sweep_temporaries); counted, not a problem.
    temporaries_left: int = 0
    missing_artifacts: list[str] = field(default_factory=list)
    poison_not_dead_lettered: list[str] = field(default_factory=list)
    unexpected_dead_letters: list[str] = field(default_factory=list)
    dead_letter_reasons: dict[str, str] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def duplicates_suppressed(self) -> int:
        return self.suppressed_finished + self.suppressed_claimed + self.suppressed_lost_claim

    @property
    def problems(self) -> list[str]:
        """Everything that breaks the soak's promise; empty when it held."""
        found = [f"lost: {rid}" for rid in self.lost]
        found += [f"completed more than once: {rid}" for rid in self.executed_twice]
        found += [f"orphan in storage: {key}" for key in self.orphans]
        found += [f"missing artifact: {key}" for key in self.missing_artifacts]
        found += [f"poison not dead-lettered: {p}" for p in self.poison_not_dead_lettered]
        found += [f"unexpected dead letter: {d}" for d in self.unexpected_dead_letters]
        if self.left_queued:
            found.append(f"{self.left_queued} message(s) left on the subscription")
        if self.final_drain_deliveries < 0:
            found.append("the final drain worker did not end idle with its summary")
        return found

    def line(self) -> str:
        return (
            f"soak: requests={self.requests} (text {self.text}, video {self.video}) "
            f"published_twice={self.published_twice} poison={self.poison} "
            f"kills={self.kills} (SIGKILL {self.sigkills}, SIGTERM {self.sigterms}) "
            f"worker_starts={self.worker_starts} deliveries={self.deliveries} "
            f"redeliveries={self.redeliveries} takeovers={self.takeovers} "
            f"duplicates_suppressed={self.duplicates_suppressed} "
            f"(finished {self.suppressed_finished}, claimed {self.suppressed_claimed}, "
            f"lost claim {self.suppressed_lost_claim}) dead_lettered={self.dead_lettered} "
            f"lost={len(self.lost)} duplicates_executed={len(self.executed_twice)} "
            f"orphans={len(self.orphans)} temporaries_left={self.temporaries_left} "
            f"left_queued={self.left_queued} "
            f"wall={self.wall_seconds:.1f}s"
        )

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["duplicates_suppressed"] = self.duplicates_suppressed
        values["line"] = self.line()
        return values


# --- workers -----------------------------------------------------------------------------
def worker_command(config: SoakConfig, idle_timeout: float) -> list[str]:
    script = Path(sys.executable).with_name("vividly-worker")
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "worker_entry"]
    return [*entry, "job", "--include", "harness.apps.soak_probe", "--concurrency",
            str(config.concurrency), "--idle-timeout", str(idle_timeout)]


class WorkerSlot:
    """One of the three workers: started again whenever it exits, until told to stop."""

    def __init__(self, index: int, command: list[str], env: dict[str, str], logs: Path) -> None:
        self.index = index
        self.command = command
        self.env = env
        self.logs = logs
        self.current: WorkerProcess | None = None
        self.starts = 0
        self.exits: list[int | None] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"slot-{index}", daemon=True)
        self._stop = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.starts += 1
                log = self.logs / f"worker{self.index}-{self.starts}.log"
                worker = WorkerProcess(self.command, self.env, log).start()
                self.current = worker
            assert worker.process is not None
            while worker.process.poll() is None and not self._stop.wait(0.1):
                pass
            if worker.process.poll() is not None:
                self.exits.append(worker.process.returncode)

    def alive(self) -> WorkerProcess | None:
        with self._lock:
            worker = self.current
        if worker is not None and worker.process is not None and worker.process.poll() is None:
            return worker
        return None

    def stop(self) -> None:
        """No more restarts; the running worker gets a warm shutdown (its messages go back)."""
        self._stop.set()
        self._thread.join()
        if self.current is not None:
            self.current.stop(timeout=15)


class Killer:
    """Every 2-10 s, SIGKILL (the process group) or SIGTERM (the worker) to a random slot."""

    def __init__(self, slots: list[WorkerSlot], interval: tuple[float, float],
                 rng: random.Random) -> None:
        self.slots = slots
        self.interval = interval
        self.rng = rng
        self.kills: collections.Counter[str] = collections.Counter()
        self.last_sigkill_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="killer", daemon=True)
        self._kinds: list[str] = []

    def _next_kind(self) -> str:
        """Each pair of kills has one of each kind, in random order: both kinds always occur."""
        if not self._kinds:
            self._kinds = ["SIGKILL", "SIGTERM"]
            self.rng.shuffle(self._kinds)
        return self._kinds.pop()

    def _loop(self) -> None:
        while not self._stop.wait(self.rng.uniform(*self.interval)):
            live = [w for w in (slot.alive() for slot in self.slots) if w is not None]
            if not live:
                continue
            victim = self.rng.choice(live)
            kind = self._next_kind()
            with contextlib.suppress(ProcessLookupError):
                if kind == "SIGKILL":
                    os.killpg(victim.pid, signal.SIGKILL)
                    self.last_sigkill_at = time.monotonic()
                else:
                    os.kill(victim.pid, signal.SIGTERM)
                self.kills[kind] += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --- the soak ----------------------------------------------------------------------------
class Soak:
    def __init__(self, config: SoakConfig, services: SoakServices) -> None:
        self.config = config
        self.services = services
        self.rng = random.Random(config.seed)
        self.logs = services.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.storage_root = services.workdir / "artifacts"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in PRODUCT_ENV and not k.startswith(("WORKER_", "CONTENT_"))}
        self.env.update({
            "PUBSUB_EMULATOR_HOST": services.emulator_host,
            "BROKER_URL": f"pubsub://{services.project}",
            "RESULT_BACKEND": services.redis_url,
            "DATABASE_URL": services.database_url,
            "STORAGE_URL": self.storage_root.as_uri(),
            "VIVIDLY_DATA_DIR": str(services.workdir / "data"),
            "PUBSUB_ACK_DEADLINE_SECONDS": str(config.ack_deadline_seconds),
            "CONTENT_CLAIM_LEASE_SECONDS": str(config.lease_seconds),
            "CONTENT_TTS_WORDS_PER_MINUTE": "300",  # short videos
            "CONTENT_RETRY_BACKOFF_SECONDS": "1",
            "WORKER_PREFETCH_MULTIPLIER": "1",
            "LOG_FORMAT": "json",
            LEDGER_ENV: services.redis_url,
        })
        os.environ["PUBSUB_EMULATOR_HOST"] = services.emulator_host  # this process's clients
        self.settings = Settings(
            broker_url=self.env["BROKER_URL"], result_backend=services.redis_url,
            database_url=services.database_url, storage_url=self.env["STORAGE_URL"],
            data_dir=services.workdir / "data",
            pubsub_ack_deadline_seconds=config.ack_deadline_seconds, log_format="text",
        )
        self.app = create_app(self.settings)
        self.content = ContentServices.from_settings(self.settings)
        self.ledger = redis.Redis.from_url(services.redis_url, decode_responses=True)
        self.valid: dict[str, str] = {}  # request id -> modality
        self.poison: list[Poison] = []
        self.published_twice = 0

    def close(self) -> None:
        self.app.close()
        self.content.close()
        self.ledger.close()

    # Publishing.
    def declare_queue(self) -> None:
        """Topic, subscription and dead-letter subscription exist before anything is sent."""
        with self.app.connection_for_write() as connection:
            queue = self.app.amqp.queues[self.app.conf.task_default_queue]
            queue(connection.default_channel).declare()

    def submit(self, modality: str) -> str:
        def send(request_id: str, kind: str) -> None:
            send_generate_content(self.app, request_id, kind)

        row = submit(
            self.content.repository, send, topic=self.rng.choice(TOPICS), modality=modality,
            subject="Science", grade_level=str(self.rng.randint(1, 12)),
        )
        request_id = str(row.id)
        self.valid[request_id] = modality
        if self.rng.random() < self.config.duplicate_share:
            send(request_id, modality)  # the same message again, on purpose
            self.published_twice += 1
        return request_id

    def publish_raw(self, kind: str, data: bytes, **attributes: str) -> None:

        topic = topic_path(self.services.project,
                           resource_id(self.settings.pubsub_prefix, self.settings.default_queue))
        clients_for_this_process().publisher.publish(
            topic=topic, timeout=10,
            messages=[PubsubMessage(data=data, attributes={POISON_ATTRIBUTE: kind, **attributes})],
        )

    def send_poison_burst(self) -> None:
        """One of each kind of message that must end on the dead-letter topic, with why."""
        queue = self.settings.default_queue
        self.publish_raw("garbage", os.urandom(16) + b"\xff\xfe" + os.urandom(48))
        self.poison.append(Poison("garbage", "not UTF-8"))
        self.publish_raw("not-kombu", json.dumps({"hello": "world", "task": "x"}).encode())
        self.poison.append(Poison("not-kombu", "not a Kombu envelope"))
        pickled = base64.b64encode(pickle.dumps({"task": GENERATE_CONTENT})).decode()
        envelope = {
            "body": pickled, "content-type": "application/x-python-serialize",
            "content-encoding": "binary", "headers": {"task": GENERATE_CONTENT},
            "properties": {"body_encoding": "base64",
                           "delivery_info": {"exchange": "", "routing_key": queue}},
        }
        self.publish_raw("pickle", json.dumps(envelope).encode(), routing_key=queue)
        self.poison.append(Poison("pickle", "content type 'application/x-python-serialize'"))
        not_celery = wire.encode({
            "body": json.dumps({"hello": "world"}), "content-type": "application/json",
            "content-encoding": "utf-8", "headers": {},
            "properties": {"delivery_info": {"exchange": "", "routing_key": queue}},
        })
        self.publish_raw("not-celery", not_celery.data, **not_celery.attributes)
        self.poison.append(Poison("not-celery", "not a Celery task message"))
        unknown = str(uuid.uuid4())
        self.app.send_task("soak.no_such_task", args=[1], task_id=unknown, queue=queue)
        self.poison.append(Poison("unknown-task", "soak.no_such_task", task_id=unknown))
        oversize_id = str(uuid.uuid4())
        self.app.send_task(GENERATE_CONTENT, args=["x" * 100_000], task_id=oversize_id)
        self.poison.append(Poison("oversize-request-id", "is not a UUID", task_id=oversize_id))
        # A row another producer wrote without the submit API's checks: the pipeline's own
        # validation fails it.
        row = self.content.repository.insert(topic="T" * 5000, modality="text")
        self.app.send_task(GENERATE_CONTENT, args=[str(row.id)], task_id=str(row.id))
        self.poison.append(Poison("oversize-topic", "topic is 5000 characters long",
                                  task_id=str(row.id), request_id=str(row.id)))

    def produce(self) -> None:
        """Submit the requests evenly over ``publish_seconds``, the poison burst mid-way."""
        count = self.config.requests
        videos = set(self.rng.sample(range(count), round(count * self.config.video_share)))
        started = time.monotonic()
        for i in range(count):
            if i == count // 2:
                self.send_poison_burst()
            self.submit("video" if i in videos else "text")
            due = started + self.config.publish_seconds * (i + 1) / count
            time.sleep(max(0.0, due - time.monotonic()))

    # Waiting.
    def unfinished(self) -> list[str]:
        ids = [uuid.UUID(rid) for rid in self.valid]
        ids += [uuid.UUID(p.request_id) for p in self.poison if p.request_id]
        with self.content.database.session() as session:
            rows = session.query(ContentRequest.id, ContentRequest.status).filter(
                ContentRequest.id.in_(ids)).all()
        finished = {str(rid) for rid, status in rows if status in {s.value for s in TERMINAL}}
        return [str(rid) for rid in ids if str(rid) not in finished]

    def wait_finished(self) -> None:
        deadline = time.monotonic() + self.config.finish_timeout
        while self.unfinished() and time.monotonic() < deadline:
            time.sleep(0.5)

    def final_drain(self, killer: Killer) -> int:
        """After the killed workers' leases ran out, one worker takes what is left until idle;
        returns how many deliveries it received."""
        expiry = killer.last_sigkill_at + self.config.ack_deadline_seconds + 1
        time.sleep(max(0.0, expiry - time.monotonic()))
        worker = WorkerProcess(worker_command(self.config, idle_timeout=3.0), self.env,
                               self.logs / "final-drain.log").start()
        try:
            worker.wait(timeout=FINAL_DRAIN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            return -1  # never idle: whatever it kept receiving is reported as left queued
        finally:
            worker.stop()
        summaries = [r for r in worker.json_records() if r.get("event") == "worker_summary"]
        return int(summaries[0]["received"]) if summaries else -1

    # Checking.
    def pull(self, subscription: str, *, release: bool, expect: int = 1000,
             timeout: float = 4.0) -> list[Any]:

        subscriber = clients_for_this_process().subscriber
        received: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(received) < expect and time.monotonic() < deadline:
            try:
                response = subscriber.pull(subscription=subscription, max_messages=100,
                                           timeout=2)
            except DeadlineExceeded:
                continue
            batch = list(response.received_messages)
            if not batch:
                continue
            received += batch
            ack_ids = [m.ack_id for m in batch]
            if release:
                subscriber.modify_ack_deadline(subscription=subscription, ack_ids=ack_ids,
                                               ack_deadline_seconds=0)
            else:
                subscriber.acknowledge(subscription=subscription, ack_ids=ack_ids)
        return received

    def subscriptions(self) -> tuple[str, str]:
        main = resource_id(self.settings.pubsub_prefix, self.settings.default_queue)
        return (subscription_path(self.services.project, main),
                subscription_path(self.services.project, dead_letter_id(main)))

    def check_dead_letters(self, report: SoakReport) -> None:
        _, dead = self.subscriptions()
        received = self.pull(dead, release=False, expect=len(self.poison), timeout=15.0)
        report.dead_lettered = len(received)
        unmatched = list(received)
        for poison in self.poison:
            found = next((m for m in unmatched if self._is(poison, m.message.attributes)), None)
            if found is None:
                report.poison_not_dead_lettered.append(poison.kind)
                continue
            unmatched.remove(found)
            reason = found.message.attributes.get("dead_letter_reason", "")
            report.dead_letter_reasons[poison.kind] = reason[:300]
            if poison.expect_reason not in reason:
                report.poison_not_dead_lettered.append(
                    f"{poison.kind}: reason {reason[:200]!r} lacks {poison.expect_reason!r}")
        report.unexpected_dead_letters = [
            f"{dict(m.message.attributes)}"[:300] for m in unmatched
        ]

    @staticmethod
    def _is(poison: Poison, attributes: Any) -> bool:
        if poison.task_id is not None:
            return bool(attributes.get("task_id") == poison.task_id)
        return bool(attributes.get(POISON_ATTRIBUTE) == poison.kind)

    def check_requests(self, report: SoakReport) -> None:
        runs = [json.loads(r) for r in self.ledger.lrange(RUNS_KEY, 0, -1)]
        starts = [r for r in runs if r["event"] == "start"]
        outcomes = collections.Counter(
            (r["request_id"], r["outcome"]) for r in runs if r["event"] == "end")
        report.deliveries = len(starts)
        report.redeliveries = sum(1 for r in starts if r["delivery_attempt"] > 1)
        report.max_delivery_attempt = max((r["delivery_attempt"] for r in starts), default=0)
        valid = set(self.valid)
        for (request_id, outcome), n in outcomes.items():
            if request_id not in valid:
                continue
            if outcome == "noop":
                report.suppressed_finished += n
            elif outcome == "busy":
                report.suppressed_claimed += n
            elif outcome == "lost":
                report.suppressed_lost_claim += n
            elif outcome == "completed" and n > 1:
                report.executed_twice.append(request_id)
        for request_id in valid:
            row = self.content.repository.get(request_id)
            if row is None or row.status != "completed":
                status = "missing" if row is None else f"{row.status}: {row.error}"
                report.lost.append(f"{request_id} ({status})")
                continue
            report.takeovers += row.attempts > 1
        self.check_storage(report)

    def check_storage(self, report: SoakReport) -> None:
        """Exactly the artifacts the database names, for completed requests, and nothing else."""
        expected: set[str] = set()
        for request_id, modality in self.valid.items():
            row = self.content.repository.get(request_id)
            if row is None or row.status != "completed":
                continue
            names = VIDEO_ARTIFACTS if modality == "video" else TEXT_ARTIFACTS
            if set(row.artifacts or {}) != names:
                report.missing_artifacts.append(f"{request_id}: database names "
                                                f"{sorted(row.artifacts or {})}")
            for name, uri in (row.artifacts or {}).items():
                if uri != (self.storage_root / request_id / name).resolve().as_uri():
                    report.missing_artifacts.append(f"{request_id}/{name}: uri {uri}")
            expected |= {f"{request_id}/{name}" for name in names}
        present = {
            p.relative_to(self.storage_root).as_posix()
            for p in self.storage_root.rglob("*") if p.is_file()
        } if self.storage_root.exists() else set()
        temporaries = {key for key in present
                       if key.startswith(f"{INCOMING_DIR}/") and key.endswith(".part")}
        report.temporaries_left = len(temporaries)
        report.orphans = sorted(present - expected - temporaries)
        report.missing_artifacts += sorted(expected - present)

    # The whole run.
    def run(self) -> SoakReport:
        report = SoakReport()
        started = time.monotonic()
        self.declare_queue()
        command = worker_command(self.config, self.config.idle_timeout)
        slots = [WorkerSlot(i + 1, command, self.env, self.logs)
                 for i in range(self.config.workers)]
        killer = Killer(slots, self.config.kill_interval, self.rng)
        for slot in slots:
            slot.start()
        killer.start()
        try:
            self.produce()
            self.wait_finished()
        finally:
            killer.stop()
            for slot in slots:
                slot.stop()
        report.final_drain_deliveries = self.final_drain(killer)
        main, _ = self.subscriptions()
        report.left_queued = len(self.pull(main, release=True, timeout=4.0))
        report.requests = len(self.valid)
        report.video = sum(1 for m in self.valid.values() if m == "video")
        report.text = report.requests - report.video
        report.published_twice = self.published_twice
        report.poison = len(self.poison)
        report.kills = sum(killer.kills.values())
        report.sigkills = killer.kills["SIGKILL"]
        report.sigterms = killer.kills["SIGTERM"]
        report.worker_starts = sum(slot.starts for slot in slots)
        report.unexpected_exits = [
            f"worker{slot.index}: exit {code}" for slot in slots for code in slot.exits
            if code not in (0, -signal.SIGKILL, -signal.SIGTERM)
        ]
        self.check_dead_letters(report)
        self.check_requests(report)
        report.wall_seconds = time.monotonic() - started
        return report


def run_soak(config: SoakConfig, services: SoakServices) -> SoakReport:
    soak = Soak(config, services)
    try:
        return soak.run()
    finally:
        soak.close()
