"""Celery over the Pub/Sub transport, with real worker processes: results, canvas, remote
control, events, leases, shutdown and kills, delayed tasks, dead letters, an emulator restart."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery, chord, chunks, group

from harness.pubsub_helpers import dead_letters, list_subscriptions, publish_raw
from harness.services import ServiceProcess
from harness.waiting import wait_for
from harness.workers import REPO_ROOT, WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.transport.errors import MessageTooLarge

PREFIX = "vividly-"
QUEUE = "vividly"


@pytest.fixture
def pubsub_broker(pubsub_project: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("RESULT_BACKEND", redis_url)
    return pubsub_project


@pytest.fixture
def app(pubsub_broker: str) -> Iterator[Celery]:
    app = create_app()
    yield app
    app.close()


def runs(ledger: redis.Redis) -> list[str]:
    return list(ledger.lrange("runs", 0, -1))


def test_tasks_results_retries_and_canvas_from_a_prefork_child(
    app: Celery, ledger: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    assert app.send_task("tests.add", (2, 3)).get(timeout=30) == 5
    assert app.send_task("tests.flaky", ("flaky", 2)).get(timeout=30) == 2
    assert runs(ledger) == ["flaky"]
    ids = app.send_task("tests.spawn_canvas").get(timeout=30)
    assert app.AsyncResult(ids["chain"]).get(timeout=30) == 6
    assert app.AsyncResult(ids["chord"]).get(timeout=30) == 12
    assert app.send_task("tests.delivery_attempt").get(timeout=30) == 1


def test_groups_chords_and_chunks_publish_through_a_pipelined_producer(
    app: Celery, start_worker: Callable[..., WorkerProcess]
) -> None:
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options, "publish_in_flight": 16,
    }
    start_worker().wait_ready()
    with app.producer_or_acquire() as producer:
        pipeline = producer.channel.publish_pipeline
        assert pipeline is not None
        confirmed_before = pipeline.confirmed
    add = app.signature("tests.add")
    grouped = group(add.clone((n, n)) for n in range(10)).apply_async()
    chorded = chord((add.clone((n, 1)) for n in range(5)), app.signature("tests.sum_all"))()
    chunked = chunks(add, [(n, n) for n in range(20)], 5).apply_async()
    assert grouped.get(timeout=30) == [2 * n for n in range(10)]
    assert chorded.get(timeout=30) == sum(n + 1 for n in range(5))
    assert chunked.get(timeout=30) == [[2 * n for n in range(k, k + 5)] for k in range(0, 20, 5)]
    # Each header task, group member and chunk went out through the pipeline, confirmed.
    assert pipeline.confirmed - confirmed_before >= 10 + 5 + 4
    assert pipeline.in_flight == 0 and pipeline.peak_in_flight <= 16


def test_children_forked_while_grpc_runs_still_publish_and_control_still_answers(
    app: Celery, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Each pool process is replaced after one task, so forks happen while the parent's gRPC
    # threads are busy pulling: the children must open their own channels and the parent's
    # must keep working.
    start_worker(extra_args=["--max-tasks-per-child", "1"]).wait_ready()
    for _ in range(4):
        ids = app.send_task("tests.spawn_canvas").get(timeout=30)
        assert app.AsyncResult(ids["chain"]).get(timeout=30) == 6
        assert app.AsyncResult(ids["chord"]).get(timeout=30) == 12
    assert app.control.ping(timeout=1.0)


def test_inspect_ping_broadcast_and_to_one_named_worker(
    app: Celery, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(hostname="alpha@%h").wait_ready()
    start_worker(hostname="beta@%h").wait_ready()
    # The bound checks that a ping ends with its timeout (a publish or a reply queue that
    # blocked would hang it), not how fast it is: bench/transport.py measures that. The slack
    # is for a loaded machine (it once took 1.5 s at load 17).
    returns_by = 1.0 + 2.0
    started = time.monotonic()
    replies = app.control.ping(timeout=1.0)
    assert time.monotonic() - started < returns_by
    names = {name.split("@")[0] for reply in replies for name in reply}
    assert names == {"alpha", "beta"}
    beta = next(name for reply in replies for name in reply if name.startswith("beta@"))
    started = time.monotonic()
    replies = app.control.ping(destination=[beta], timeout=1.0)
    assert time.monotonic() - started < returns_by
    assert [list(reply) for reply in replies] == [[beta]]


def test_celery_inspect_ping_cli_answers_quickly(
    app: Celery, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    started = time.monotonic()
    output = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "vividly_tasks", "inspect", "ping",
         "--timeout", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "pong" in output
    assert time.monotonic() - started < 6  # includes the interpreter's own start-up


def test_celery_events_see_task_events(
    app: Celery, pubsub_broker: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    seen: list[str] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"*": lambda event: seen.append(event["type"])}
        )
        capture = threading.Thread(target=receiver.capture, kwargs={"wakeup": False})
        capture.start()
        try:
            assert wait_for(
                lambda: any("celeryev" in s for s in list_subscriptions(pubsub_broker)), 10
            )
            result = app.send_task("tests.add", (1, 1))
            assert result.get(timeout=10) == 2
            assert wait_for(lambda: "task-succeeded" in seen, timeout=20)
        finally:
            receiver.should_stop = True
            capture.join(10)
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= set(seen)


def test_mingle_syncs_a_starting_worker_with_the_running_one(
    pubsub_broker: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    """Celery enables Mingle for this transport's driver type (``gcpubsub``): a starting worker
    broadcasts ``hello`` and the running one answers on its reply queue. (Gossip it leaves off
    for that driver type: Celery's Gossip step knows only amqp and redis.)"""
    alpha = start_worker(hostname="alpha@%h")
    alpha.wait_ready()
    beta = start_worker(hostname="beta@%h")
    beta.wait_ready()
    assert "mingle: sync with 1 nodes" in beta.logs()
    assert wait_for(lambda: "sync with beta@" in alpha.logs(), 10)


@pytest.mark.slow
def test_a_long_task_keeps_its_lease_and_so_do_the_prefetched_ones(
    app: Celery, ledger: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("PUBSUB_ACK_DEADLINE_SECONDS", "10")
    monkeypatch.setenv("WORKER_PREFETCH_MULTIPLIER", "3")
    start_worker(concurrency=1).wait_ready()
    app.send_task("tests.record", ("long", 45))
    for i in range(2):
        app.send_task("tests.record", (f"behind-{i}",))
    assert wait_for(lambda: len(runs(ledger)) == 3, timeout=90)
    time.sleep(12)  # past another ack deadline: nothing comes back
    assert sorted(runs(ledger)) == ["behind-0", "behind-1", "long"]


def test_sigterm_releases_prefetched_messages_to_another_worker_at_once(
    app: Celery, ledger: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("WORKER_PREFETCH_MULTIPLIER", "4")
    first = start_worker(hostname="first@%h", concurrency=1).wait_ready()
    app.send_task("tests.record", ("running", 3))
    for i in range(3):
        app.send_task("tests.record", (f"prefetched-{i}", 0))
    first.wait_for_log(lambda text: "Task tests.record" in text, timeout=20)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0
    exited = time.monotonic()
    start_worker(hostname="second@%h", concurrency=1).wait_ready()
    assert wait_for(lambda: len(runs(ledger)) == 4, timeout=20)
    assert time.monotonic() - exited < 3 + 10  # 3 s after the second worker is ready
    assert sorted(runs(ledger)) == ["prefetched-0", "prefetched-1", "prefetched-2", "running"]


@pytest.mark.slow
def test_task_of_a_sigkilled_worker_completes_once_elsewhere(
    app: Celery, ledger: redis.Redis, monkeypatch: pytest.MonkeyPatch,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    monkeypatch.setenv("PUBSUB_ACK_DEADLINE_SECONDS", "10")
    doomed = start_worker(hostname="doomed@%h", concurrency=1).wait_ready()
    app.send_task("tests.record", ("survivor", 4))
    doomed.wait_for_log(lambda text: "Task tests.record" in text, timeout=20)
    killed = time.monotonic()
    doomed.kill_group()
    start_worker(hostname="heir@%h", concurrency=1).wait_ready()
    assert wait_for(lambda: runs(ledger) == ["survivor"], timeout=30)
    assert time.monotonic() - killed < 10 + 4 + 8  # ack deadline + task + a few seconds
    time.sleep(3)
    assert runs(ledger) == ["survivor"]


@pytest.mark.slow
def test_a_delayed_task_survives_its_worker_exiting(
    app: Celery, ledger: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    holder = start_worker(hostname="holder@%h").wait_ready()
    sent = time.monotonic()
    app.send_task("tests.record", ("delayed",), countdown=20)
    holder.wait_for_log(lambda text: "Task tests.record" in text, timeout=10)
    time.sleep(max(0.0, 5 - (time.monotonic() - sent)))
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=15) == 0
    start_worker(hostname="runner@%h").wait_ready()
    assert wait_for(lambda: runs(ledger) == ["delayed"], timeout=50)
    ran_after = time.monotonic() - sent
    assert 20 <= ran_after <= 45, ran_after
    time.sleep(2)
    assert runs(ledger) == ["delayed"]


def test_poison_messages_are_dead_lettered_while_tasks_keep_running(
    app: Celery, pubsub_broker: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    publish_raw(pubsub_broker, PREFIX, QUEUE, b"\x89PNG not json at all")
    publish_raw(pubsub_broker, PREFIX, QUEUE, b'{"request_id": "6f1c"}')
    assert app.send_task("tests.add", (20, 22)).get(timeout=30) == 42
    reasons = [m.message.attributes["dead_letter_reason"]
               for m in dead_letters(pubsub_broker, PREFIX, QUEUE, expect=2)]
    assert len(reasons) == 2 and all(reasons)
    assert app.send_task("tests.add", (1, 2)).get(timeout=30) == 3


def test_rejected_and_unknown_tasks_are_dead_lettered_with_a_reason(
    app: Celery, pubsub_broker: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    app.send_task("tests.reject_me", ("the lesson topic is empty",))
    app.send_task("tests.no_such_task")
    assert app.send_task("tests.add", (1, 1)).get(timeout=30) == 2
    reasons = sorted(m.message.attributes["dead_letter_reason"]
                     for m in dead_letters(pubsub_broker, PREFIX, QUEUE, expect=2))
    assert reasons == [
        "tests.reject_me: the lesson topic is empty",
        "unregistered task 'tests.no_such_task': this worker does not have it",
    ]


def test_fifty_short_lived_producers_lose_nothing(
    app: Celery, ledger: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    script = (
        "import sys\n"
        "from vividly_tasks import app\n"
        "for i in range(int(sys.argv[1]), int(sys.argv[2])):\n"
        "    app.send_task('tests.record', (f'p{i}',))\n"
    )
    # 50 processes, 5 at a time (2 cores), each enqueues one task and exits at once.
    for start in range(0, 50, 5):
        producers = [
            subprocess.Popen([sys.executable, "-c", script, str(i), str(i + 1)], cwd=REPO_ROOT)
            for i in range(start, start + 5)
        ]
        assert [p.wait(timeout=60) for p in producers] == [0] * 5
    start_worker().wait_ready()
    assert wait_for(lambda: len(runs(ledger)) >= 50, timeout=60)
    assert sorted(runs(ledger)) == sorted(f"p{i}" for i in range(50))


def test_large_arguments_run_and_oversize_ones_fail_clearly(
    app: Celery, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker().wait_ready()
    assert app.send_task("tests.size_of", ("x" * 9_000_000,)).get(timeout=60) == 9_000_000
    with pytest.raises(MessageTooLarge, match=r"tests\.size_of is .* bytes; Pub/Sub's limit"):
        app.send_task("tests.size_of", ("x" * 11_000_000,))


def test_worker_survives_an_emulator_restart(
    app: Celery, ledger: redis.Redis, pubsub_emulator: ServiceProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker().wait_ready()
    for i in range(5):
        app.send_task("tests.record", (f"before-{i}",))
    assert wait_for(lambda: len(runs(ledger)) == 5, timeout=30)
    # The emulator keeps nothing across a restart: the worker must notice, reconnect and
    # declare its queues again; then the "after" batch flows through the new emulator.
    pubsub_emulator.restart()
    worker.wait_for_log(lambda text: text.count("Connected to pubsub://") >= 2, timeout=60)
    worker.wait_for_log(lambda text: text.count(" ready.") >= 1, timeout=60)
    time.sleep(2)  # the reconnected worker declares its queues on the new emulator
    for i in range(5):
        app.send_task("tests.record", (f"after-{i}",))
    assert wait_for(lambda: len(runs(ledger)) == 10, timeout=60)
    assert sorted(runs(ledger)) == sorted(
        [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
    )


def test_inspect_leaves_no_subscriptions_and_a_clean_stop_removes_its_own(
    app: Celery, pubsub_broker: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    before = set(list_subscriptions(pubsub_broker))
    worker = start_worker().wait_ready()
    with_worker = set(list_subscriptions(pubsub_broker))
    for _ in range(50):
        app.control.ping(timeout=0.2)
    time.sleep(1)
    after_pings = set(list_subscriptions(pubsub_broker))
    assert after_pings == with_worker, sorted(after_pings - with_worker)
    worker.stop()
    assert wait_for(
        lambda: not [s for s in set(list_subscriptions(pubsub_broker)) - before
                     if "pidbox" in s or "reply" in s],
        timeout=10,
    )


