"""Every ``vividly`` command end to end against the Pub/Sub emulator,
with real worker processes where a task must run, and the bad input each must refuse with its
own exit code. Also ``celery -A vividly_tasks call vividly.generate_content`` from a producer
that exits before any worker runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.pubsub_v1 import PubsubMessage
from sqlalchemy import update

from harness.content import WORKER_INCLUDE
from harness.pubsub_helpers import publish_raw
from harness.waiting import wait_for
from harness.workers import REPO_ROOT, WorkerProcess
from vividly_tasks import create_app
from vividly_tasks.cli import cli
from vividly_tasks.cli.exit_codes import (
    RET_CONFIG,
    RET_FAILED,
    RET_INVALID,
    RET_NO_PERMISSION,
    RET_NOT_FOUND,
    RET_UNAVAILABLE,
    RET_USAGE,
)
from vividly_tasks.lessons.models import ContentRequest
from vividly_tasks.lessons.services import ContentServices
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.status import Status
from vividly_tasks.transport.dead_letter_box import DeadLetter

PREFIX = "vividly-"  # the settings' default prefix
QUEUE_TOPIC = f"topics/{PREFIX}vividly"


def vividly(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as people run it, with this test's environment."""
    script = Path(sys.executable).with_name("vividly")
    return subprocess.run(
        [str(script), *args], check=False, env={**os.environ, **(env or {})}, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def on_a_terminal(*args: str) -> subprocess.Popen[str]:
    """``vividly`` with a pseudo-terminal for its output (util-linux's script), as people see it."""
    command = shlex.join([str(Path(sys.executable).with_name("vividly")), *args])
    return subprocess.Popen(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True,
    )


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """The same command in this process (no interpreter start-up): for the many calls."""
    result = CliRunner().invoke(cli, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


def expect(result: subprocess.CompletedProcess[str] | Outcome, code: int) -> str:
    assert result.returncode == code, (
        f"exit {result.returncode}, expected {code}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture
def pubsub_env(pubsub_project: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BROKER_URL", f"pubsub://{pubsub_project}")
    monkeypatch.setenv("CONTENT_TTS_WORDS_PER_MINUTE", "450")  # short videos
    return pubsub_project


@pytest.fixture
def services(pubsub_env: str) -> Iterator[ContentServices]:
    """The test's own view of the content database (the CLI's and the workers' too)."""
    services = ContentServices.from_settings(Settings())
    yield services
    services.close()


def content_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(extra_args=WORKER_INCLUDE, concurrency=2).wait_ready()


def test_producers_status_and_dead_letters_with_one_real_worker(
    services: ContentServices, pubsub_env: str, start_worker: Callable[..., WorkerProcess],
) -> None:
    # Before any worker exists: `celery call` (a short-lived producer: it exits at once, and
    # its message must still be there), `vividly submit`, and two messages that will be
    # dead-lettered: a generation of a request id without a row (rejected by the task) and a
    # message that is not a Celery message at all.
    called = services.repository.insert(topic="Volcanoes", modality="text", grade_level="6")
    celery = Path(sys.executable).with_name("celery")
    result = subprocess.run(
        [str(celery), "-A", "vividly_tasks", "call", "vividly.generate_content",
         "--args", json.dumps([str(called.id)])],
        check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert uuid.UUID(result.stdout.strip())  # celery call prints the task id

    request_id = expect(vividly("submit", "--topic", "Photosynthesis", "--modality", "video",
                                "--grade", "7", "--subject", "Biology"), 0).strip()
    queued = json.loads(expect(invoke("status", request_id, "--json"), 0))
    assert (queued["status"], queued["modality"], queued["topic"]) == (
        "queued", "video", "Photosynthesis")

    orphan = str(uuid.uuid4())
    expect(invoke("status", orphan), RET_NOT_FOUND)
    app = create_app()
    app.send_task("vividly.generate_content", args=[orphan], task_id=orphan)
    app.close()
    publish_raw(pubsub_env, PREFIX, "vividly", b"{not json", origin="another system")

    # Without --json, status follows the request to its end with a progress bar: on a
    # terminal (script(1) gives it one), started while the request waits for a worker.
    follower = on_a_terminal("status", request_id, "--timeout", "90")
    worker = content_worker(start_worker)
    followed = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "",  # terminal control sequences
                      follower.communicate(timeout=120)[0]).replace("\r", "\n")
    assert follower.returncode == 0, followed
    bars = [line for line in followed.splitlines() if "] " in line and "%" in line]
    assert re.search(r"^queued .*\[-+\] +0%$", bars[0]), bars
    assert any(re.search(r"^generating (narrate|slides|encode) .*\] +\d+%$", bar)
               for bar in bars), bars
    assert re.search(r"^completed +complete +\[#+\] +100%$", bars[-1]), bars
    assert re.search(r"status: +completed", followed)
    mp4 = next(line.split()[-1] for line in followed.splitlines() if "lesson.mp4" in line)
    assert Path(mp4).stat().st_size > 10_000
    final = json.loads(expect(invoke("status", request_id, "--json"), 0))
    assert final["status"] == "completed" and final["progress"] == 100
    assert set(final["artifacts"]) >= {"lesson.md", "lesson.html", "lesson.mp4"}
    wait_for(lambda: services.repository.get(called.id).status == "completed",  # type: ignore[union-attr]
             30, "the request sent by celery call to complete")

    worker.wait_for_log(lambda log: log.count("dead-lettering message") >= 2, 30)
    check_dead_letters(services, orphan)


def test_bad_input_gets_its_own_exit_code_and_writes_nothing(
    services: ContentServices, monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli, list(args))
        return result.exit_code, result.output

    code, output = run("submit", "--topic", "  ", "--modality", "text")
    assert (code, "invalid request: topic is empty" in output) == (RET_INVALID, True)
    code, output = run("submit", "--topic", "Tides", "--modality", "text", "--grade", "15")
    assert code == RET_INVALID and "grade level '15' is not K or 1-12" in output
    code, output = run("submit", "--topic", "Tides", "--modality", "audio")
    assert code == RET_USAGE and "'audio' is not one of" in output
    code, output = run("submit", "--topic", "x" * 201, "--modality", "text")
    assert code == RET_INVALID and "the limit is 200" in output
    assert services.repository.list_by_status(Status.PENDING) == []
    assert services.repository.list_by_status(Status.QUEUED) == []

    unknown = str(uuid.uuid4())
    code, output = run("status", unknown)
    assert code == RET_NOT_FOUND and f"unknown request id {unknown}" in output
    code, output = run("status", "not-an-id")
    assert code == RET_USAGE and "'not-an-id' is not a request id" in output
    code, output = run("status", unknown, "--timeout", "soon")
    assert code == RET_USAGE

    monkeypatch.setenv("WORKER_IDLE_TIMEOUT", "never")
    code, output = run("status", unknown)
    assert code == RET_CONFIG and "WORKER_IDLE_TIMEOUT" in output
    monkeypatch.delenv("WORKER_IDLE_TIMEOUT")
    monkeypatch.delenv("BROKER_URL")
    code, output = run("provision")
    assert code == RET_CONFIG and "set BROKER_URL=pubsub://PROJECT" in output


def test_an_unreachable_broker_exits_69_and_resubmit_sends_the_pending_request(
    services: ContentServices, pubsub_env: str,
) -> None:
    nowhere = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}  # the discard port: nothing listens
    failed = invoke("submit", "--topic", "Tides", "--modality", "text", env=nowhere)
    expect(failed, RET_UNAVAILABLE)
    (pending,) = services.repository.list_by_status(Status.PENDING)
    assert f"vividly resubmit {pending.id}" in failed.stderr
    assert "unavailable: Pub/Sub unavailable" in failed.stderr
    expect(invoke("dlq", "list", env=nowhere), RET_UNAVAILABLE)
    stuck = expect(invoke("status", str(pending.id)), 0)  # not followed: it cannot progress
    assert re.search(r"status: +pending", stuck) and "error:         enqueue failed" in stuck

    expect(invoke("resubmit", str(uuid.uuid4())), RET_NOT_FOUND)
    assert expect(invoke("resubmit", str(pending.id)), 0).strip() == str(pending.id)
    assert services.repository.get(pending.id).status == Status.QUEUED  # type: ignore[union-attr]
    again = invoke("resubmit", str(pending.id))  # queued may be sent again (idempotent task)
    expect(again, 0)


def test_provision_verify_only_dry_run_idempotent_and_policy_updates(
    services: ContentServices, pubsub_env: str,
) -> None:
    verify_only = {"PUBSUB_AUTO_CREATE": "false"}
    # Least privilege simulated: verify-only settings and nothing provisioned.
    refused = vividly("provision", env=verify_only)
    expect(refused, RET_NO_PERMISSION)
    assert re.search(rf"missing +topic +projects/{pubsub_env}/{QUEUE_TOPIC} ", refused.stdout)
    assert f"projects/{pubsub_env}/subscriptions/{PREFIX}vividly-dead-letter" in refused.stderr
    submitted = invoke("submit", "--topic", "Tides", "--modality", "text", env=verify_only)
    expect(submitted, RET_NO_PERMISSION)
    assert f"{QUEUE_TOPIC} does not exist" in submitted.stderr
    pending = services.repository.list_by_status(Status.PENDING)  # kept, with the reason, to resend
    assert len(pending) == 1 and "does not exist" in (pending[0].error or "")

    planned = expect(invoke("provision", "--dry-run"), 0)
    assert len(re.findall(r"^  create ", planned, re.MULTILINE)) == 9
    assert "dry run: 9 change(s) not applied" in planned
    # The queue's binding is recorded too, so verify-only workers share it (bindings.py).
    assert re.search(rf"create +subscription +projects/{pubsub_env}/subscriptions/"
                     rf"{PREFIX}vividly~binding~direct~vividly ", planned)
    expect(invoke("provision", "--verify-only"), RET_NO_PERMISSION)  # the dry run made nothing

    assert "created 9, updated 0, 0 already as wanted" in expect(invoke("provision"), 0)
    assert "created 0, updated 0, 9 already as wanted" in expect(invoke("provision"), 0)
    assert "verified: all 9 resources" in expect(invoke("provision", env=verify_only), 0)

    changed = {"PUBSUB_ACK_DEADLINE_SECONDS": "30", "PUBSUB_MAX_DELIVERY_ATTEMPTS": "7"}
    differs = invoke("provision", env={**changed, **verify_only})
    expect(differs, RET_NO_PERMISSION)
    assert "ack_deadline_seconds: 60 -> 30" in differs.stdout
    assert "after 5 deliveries -> " in differs.stdout and "after 7 deliveries" in differs.stdout
    assert "created 0, updated 1, 8 already" in expect(invoke("provision", env=changed), 0)
    expect(invoke("provision", env={**changed, **verify_only}), 0)

    # Queues bound to a task for plain messages are consumed by workers: provisioned too.
    bound = {"PUBSUB_PLAIN_MESSAGE_TASKS": '{"lesson-requests": "vividly.generate_content"}'}
    planned = expect(invoke("provision", "--dry-run", env={**changed, **bound}), 0)
    assert re.search(rf"create +subscription +projects/{pubsub_env}/subscriptions/"
                     rf"{PREFIX}lesson-requests +\(queue lesson-requests\)", planned)
    assert "dry run: 6 change(s) not applied" in planned


def dead_letters(*args: str) -> list[dict[str, object]]:
    output = expect(invoke("dlq", "list", "--json", *args), 0)
    return [json.loads(line) for line in output.splitlines()]


def check_dead_letters(services: ContentServices, orphan: str) -> None:
    """dlq list (both forms), replay and purge, on the two dead letters of the test above."""
    letters = wait_for(lambda: (found := dead_letters()) and len(found) == 2 and found, 20,
                       "both dead letters to be listed")
    by_task = {letter["task_id"]: letter for letter in letters}
    rejected, poison = by_task[orphan], by_task[None]
    assert rejected["task"] == "vividly.generate_content"
    assert f"InvalidRequest: unknown request id {orphan}" in str(rejected["reason"])
    assert rejected["delivery_count"] == 1 and rejected["queue"] == "vividly"
    assert "not JSON" in str(poison["reason"]) and poison["delivery_count"] == 1
    listing = expect(vividly("dlq", "list"), 0)
    assert "2 dead letter(s)" in listing and f"vividly.generate_content[{orphan}]" in listing
    assert listing.count("deliveries: 1") == 2 and "reason: data is not JSON" in listing

    # The missing row appears; replaying the rejected message (by its task id) generates it.
    services.repository.insert(topic="Magnets", modality="text", request_id=uuid.UUID(orphan))
    expect(invoke("dlq", "replay", "no-such-id"), RET_NOT_FOUND)
    expect(invoke("dlq", "replay"), RET_USAGE)
    assert "replayed 1 of 2" in expect(invoke("dlq", "replay", orphan), 0)
    assert "completed" in expect(invoke("status", orphan, "--timeout", "60"), 0)
    assert [letter["task_id"] for letter in dead_letters()] == [None]

    aborted = invoke("dlq", "purge", "--all")  # not confirmed: nothing happens
    expect(aborted, RET_FAILED)
    assert "purged 1 of 1" in expect(invoke("dlq", "purge", "--all", "--yes"), 0)
    assert dead_letters() == []


def test_a_dead_letter_of_pubsubs_own_policy_reads_its_attributes() -> None:
    """What Pub/Sub's dead-letter policy forwards carries ``CloudPubSubDeadLetterSource*``
    attributes (as the emulator writes them), not ours: the delivery count is the reason, and a
    replay drops them (waiting for five real redeliveries costs ~10 s of Pub/Sub's backoff)."""
    letter = DeadLetter(
        message_id="17", ack_id="a", data=b'{"some": "payload"}', publish_time=None,
        attributes={
            "origin": "elsewhere",
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
            "CloudPubSubDeadLetterSourceSubscription": "vividly-vividly",
            "CloudPubSubDeadLetterSourceSubscriptionProject": "p",
            "CloudPubSubDeadLetterSourceTopicPublishTime": "2026-11-28T15:06:55.259Z",
        },
    )
    assert letter.delivery_count == 5 and letter.task is None
    assert letter.reason == "not acknowledged after 5 deliveries (Pub/Sub's dead-letter policy)"
    replay = letter.replay_message()
    assert replay.data == letter.data
    assert dict(replay.attributes) == {"origin": "elsewhere", "replay_of": "17"}


#: What a hostile publisher or upstream writes: an OSC that retitles the terminal (ESC ] ... BEL),
#: the one-byte C1 CSI that clears it, a right-to-left override, and a line break.
HOSTILE = "\x1b]0;pwned\x07 \x9b2J \u202etxt.exe \nstatus: completed"
HOSTILE_SHOWN = "\\x1b]0;pwned\\x07 \\x9b2J \\u202etxt.exe \\nstatus: completed"


def assert_inert(output: str) -> None:
    """Nothing in ``output`` but printable characters and line breaks."""
    assert not [c for c in output if not c.isprintable() and c != "\n"], repr(output)


def test_dlq_list_and_replay_escape_what_the_publisher_wrote(pubsub_env: str) -> None:
    """Anyone who may publish to the dead-letter topic (or whose message was dead-lettered)
    writes its attributes and data: they print escaped; the JSON form carries them exactly."""
    from vividly_tasks.transport.clients import clients_for_this_process
    from vividly_tasks.transport.naming import dead_letter_id, resource_id, topic_path

    expect(invoke("provision"), 0)
    hostile_id = f"{HOSTILE}-{uuid.uuid4()}"
    clients_for_this_process().publisher.publish(
        topic=topic_path(pubsub_env, dead_letter_id(resource_id(PREFIX, "vividly"))),
        messages=[PubsubMessage(data=HOSTILE.encode(), attributes={
            "task": "vividly.generate_content", "task_id": hostile_id,
            "dead_letter_reason": HOSTILE, "dead_lettered_at": HOSTILE, "delivery_attempt": "1",
        })],
        timeout=10,
    )
    listing = expect(vividly("dlq", "list"), 0)
    assert_inert(listing)
    assert f"vividly.generate_content[{HOSTILE_SHOWN}-" in listing
    assert f"reason: {HOSTILE_SHOWN}" in listing and f"data:   {HOSTILE_SHOWN}" in listing

    as_json = expect(vividly("dlq", "list", "--json"), 0)
    assert_inert(as_json)
    (letter,) = [json.loads(line) for line in as_json.splitlines()]
    assert (letter["task_id"], letter["reason"]) == (hostile_id, HOSTILE)

    replayed = invoke("dlq", "replay", hostile_id)
    assert_inert(expect(replayed, 0))
    assert f"[{HOSTILE_SHOWN}-" in replayed.stdout


def test_status_escapes_the_error_and_stage_that_a_worker_or_producer_wrote(
    services: ContentServices,
) -> None:
    row = services.repository.insert(topic=HOSTILE, modality="text", subject=HOSTILE,
                                     grade_level="7")
    assert services.repository.fail(row.id, f"upstream said: {HOSTILE}")
    with services.database.session() as session:  # another producer's stage
        session.execute(update(ContentRequest).where(ContentRequest.id == row.id)
                        .values(stage=HOSTILE, artifacts={"lesson.md": HOSTILE}))

    shown = vividly("status", str(row.id))
    expect(shown, RET_FAILED)
    assert_inert(shown.stdout + shown.stderr)
    assert f"error:         upstream said: {HOSTILE_SHOWN}" in shown.stdout
    assert not re.search(r"^status: +completed", shown.stdout, re.MULTILINE)
    assert f"lesson.md:     {HOSTILE_SHOWN}" in shown.stdout

    as_json = vividly("status", str(row.id), "--json")
    expect(as_json, RET_FAILED)
    assert_inert(as_json.stdout)
    stored = json.loads(as_json.stdout)
    assert (stored["stage"], stored["error"]) == (HOSTILE, f"upstream said: {HOSTILE}")
