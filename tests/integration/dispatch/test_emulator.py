"""The whole loop on the Pub/Sub emulator with the local runner: a push subscription on the
queue's topic wakes ``vividly dispatch serve``, which starts ``vividly-worker job`` processes
that drain the queue and exit. Needs the emulator (fails, not skips, when CI is set)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.cloud import pubsub_v1

from harness.dispatch import DispatchServe
from harness.waiting import wait_for
from vividly_tasks.cli import cli
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status

pytestmark = pytest.mark.slow

QUEUE_TOPIC = "vividly-vividly"


@pytest.fixture
def loop_env(pubsub_project: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("DISPATCH_RUNNER", "local")
    monkeypatch.setenv("DISPATCH_MESSAGES_PER_TASK", "10")
    monkeypatch.setenv("DISPATCH_MAX_TASKS", "3")
    monkeypatch.setenv("DISPATCH_GATHER_SECONDS", "1")
    monkeypatch.setenv("DISPATCH_START_LEAD_SECONDS", "3")
    monkeypatch.setenv("WORKER_IDLE_TIMEOUT", "3")
    monkeypatch.setenv("WORKER_CONCURRENCY", "2")
    result = CliRunner().invoke(cli, ["provision"])
    assert result.exit_code == 0, result.output
    return pubsub_project


@pytest.fixture
def dispatcher(loop_env: str, tmp_path: Path) -> Iterator[DispatchServe]:
    server = DispatchServe({}, tmp_path / "dispatch.log")
    subscriber = pubsub_v1.SubscriberClient()
    wake_up = subscriber.subscription_path(loop_env, "vividly-wake-up")
    subscriber.create_subscription(request={
        "name": wake_up, "topic": f"projects/{loop_env}/topics/{QUEUE_TOPIC}",
        "push_config": {"push_endpoint": f"{server.url}/push"},
    })
    try:
        yield server
    finally:
        server.stop()
        subscriber.delete_subscription(subscription=wake_up)
        subscriber.close()


def worker_summaries(settings: DispatchSettings) -> list[dict[str, object]]:
    folder = settings.effective_dispatch_record_path.parent / "workers"
    summaries = []
    for log in sorted(folder.glob("*.log")):
        for line in log.read_text().splitlines():
            if '"worker_summary"' in line:
                summaries.append(json.loads(line[line.index("{"):]))
    return summaries


def test_thirty_requests_wake_the_dispatcher_and_are_drained_by_local_jobs(
        dispatcher: DispatchServe) -> None:
    settings = DispatchSettings()
    time.sleep(3)  # nothing submitted: nothing starts
    assert dispatcher.decisions() == []
    assert worker_summaries(settings) == []

    runner = CliRunner()
    ids = []
    for n in range(30):
        result = runner.invoke(cli, ["submit", "--topic", f"Tides {n}", "--modality", "text"])
        assert result.exit_code == 0, result.output
        ids.append(result.stdout.strip())

    services = ContentServices.from_settings(Settings())
    try:
        def all_completed() -> bool:
            rows = [services.repository.get(request_id) for request_id in ids]
            return all(row is not None and row.status == Status.COMPLETED.value
                       for row in rows)

        wait_for(all_completed, 90, "all 30 requests completed", interval=0.5)
        rows = [services.repository.get(request_id) for request_id in ids]
        assert [row.attempts for row in rows if row is not None] == [1] * 30
    finally:
        services.close()

    launches = [d for d in dispatcher.decisions() if d["action"] == "launch"]
    # Submitted one after the other: the first decision sees a few, and the launches grow
    # with the arrivals, never past what 30 messages need (ceil(30 / 10) tasks).
    assert 1 <= sum(int(str(d["task_count"])) for d in launches) <= 3
    summaries = wait_for(
        lambda: (s := worker_summaries(settings)) and
        len(s) == sum(int(str(d["task_count"])) for d in launches) and s,
        30, "every worker process exited")
    assert {s["exit_code"] for s in summaries} == {0}
    assert sum(int(str(s["succeeded"])) for s in summaries) == 30  # each exactly once


#: "Due in 2 minutes": long enough for several decision windows and re-checks to pass while
#: the task waits, and for the due time to fall after the suite's start, when both processes
#: start their services and a job's start takes seconds (at 45 s a run started 12 s late).
#: One xdist process waits meanwhile; the other steals the rest of the work.
DUE_IN_SECONDS = 120


def test_a_task_due_later_starts_nothing_early_and_runs_on_time(
        dispatcher: DispatchServe) -> None:
    from vividly_tasks.lessons.product import create_app

    app = create_app(Settings())
    try:
        due = time.time() + DUE_IN_SECONDS
        result = app.send_task("vividly.health_check", countdown=DUE_IN_SECONDS)
        ran_at = float(result.get(timeout=DUE_IN_SECONDS + 45)["time"])
    finally:
        app.close()
    launches = [d for d in dispatcher.decisions() if d["action"] == "launch"]
    early = [d for d in launches if float(str(d["decided_at"])) < due - 3 - 1]
    assert len(early) == 0, early  # none before the start lead (two would be allowed)
    assert len(launches) == 1
    assert due <= ran_at < due + 10, ran_at - due
    # The wake-up's own decision saw the task as delayed and said when to look again.
    first = dispatcher.decisions()[0]
    assert (first["reason"], first["delayed"]) == ("nothing_waiting", 1)
    assert abs(float(str(first["next_check_at"])) - (due - 3)) < 2


#: Long enough for the first execution to start, run the task due now and exit idle (its
#: WORKER_IDLE_TIMEOUT is 3 s) well before the delayed task's start lead.
HANDED_BACK_DUE_IN_SECONDS = 40


def test_a_delayed_task_handed_back_by_a_running_execution_runs_on_time(
        dispatcher: DispatchServe) -> None:
    """The worker of an execution started for other work received the delayed task, exited
    idle before it was due and gave it back: its summary says what it gave back and when that
    is due, and the dispatcher starts the next execution for the due time, so it is never left
    queued."""
    from vividly_tasks.lessons.product import create_app

    settings = Settings()
    app = create_app(settings)
    try:
        now = app.send_task("vividly.health_check")
        due = time.time() + HANDED_BACK_DUE_IN_SECONDS
        delayed = app.send_task("vividly.health_check", countdown=HANDED_BACK_DUE_IN_SECONDS)
        now.get(timeout=60)
        ran_at = float(delayed.get(timeout=HANDED_BACK_DUE_IN_SECONDS + 45)["time"])
    finally:
        app.close()
    assert due <= ran_at < due + 10, ran_at - due

    summaries = wait_for(lambda: (s := worker_summaries(DispatchSettings())) and len(s) >= 2 and s,
                         30, "two worker processes exited")
    handed_back = [s for s in summaries if s["released_delayed"]]
    assert len(handed_back) == 1, summaries  # the first execution, at its idle exit
    [first] = handed_back
    assert (first["exit_reason"], first["succeeded"], first["released_delayed"]) == (
        "idle", 1, 1)
    first_due = datetime.fromisoformat(str(first["released_delayed_first_due"])).timestamp()
    assert abs(first_due - due) < 1
    [runner] = [s for s in summaries if s["cloud_run_execution"]
                != first["cloud_run_execution"] and s["succeeded"]]
    assert (runner["received"], runner["released_delayed"]) == (1, 0)

    launches = [d for d in dispatcher.decisions() if d["action"] == "launch"]
    assert [d["execution"] for d in launches] == [first["cloud_run_execution"],
                                                  runner["cloud_run_execution"]]
    # The second launch came at the start lead (3 s) before the due time, not before.
    assert due - 3 - 1 <= float(str(launches[1]["decided_at"])) < due, (
        float(str(launches[1]["decided_at"])) - due)
