"""The lesson workload's database layer on SQLite and a real PostgreSQL: migrations, claims,
leases, the runner's once-only completion and resumption."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy
import sqlalchemy.exc
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from harness.content import DATABASES
from vividly_tasks.lessons.database import ContentDatabase, current_revision
from vividly_tasks.lessons.errors import (
    EnqueueFailed,
    InvalidRequest,
    TimeLimitExceeded,
    ToolMissing,
    TransientError,
)
from vividly_tasks.lessons.generator import ModelUsage, OfflineGenerator, report_usage
from vividly_tasks.lessons.lesson import Lesson
from vividly_tasks.lessons.models import Base, ContentRequest, utcnow
from vividly_tasks.lessons.narration import Voice, narrate
from vividly_tasks.lessons.pipeline import PipelineConfig
from vividly_tasks.lessons.repository import ContentRepository
from vividly_tasks.lessons.requests import resubmit, submit
from vividly_tasks.lessons.runner import ContentRunner, LeaseKeeper
from vividly_tasks.lessons.stages import StageStore, stage_prefix
from vividly_tasks.lessons.status import Stage, Status
from vividly_tasks.lessons.storage import (
    INCOMING_DIR,
    LocalStorage,
    artifact_key,
)
from vividly_tasks.lessons.validation import (
    LessonSpec,
)

LIMITS = {"max_topic_chars": 200, "max_field_chars": 100}


# --- the database layer, on both databases -----------------------------------------------------
@pytest.fixture(params=DATABASES)
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContentRepository]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'content.sqlite'}"
    database = ContentDatabase(url)
    database.migrate()
    yield ContentRepository(database)
    database.dispose()


def test_migrations_match_the_model_and_rerun_as_no_ops(repository: ContentRepository) -> None:
    engine = repository.database.engine
    repository.database.migrate()
    assert current_revision(engine) == "0006"
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_a_released_claim_is_retrying_with_its_due_time_until_the_retry_claims_it(
    repository: ContentRepository,
) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    claim = repository.claim(row.id, holder="a", lease_seconds=60)
    assert claim is not None
    due = utcnow() + timedelta(seconds=30)
    assert repository.release(claim, "attempt 1 failed: ServiceUnavailable: down", due)
    waiting = repository.get(row.id)
    assert waiting is not None and waiting.status == Status.RETRYING
    assert waiting.retry_at == due and waiting.claim_token is None
    assert waiting.error == "attempt 1 failed: ServiceUnavailable: down"
    retry = repository.claim(row.id, holder="b", lease_seconds=60)
    assert retry is not None and retry.attempt == 2
    working = repository.get(row.id)
    assert working is not None and (working.status, working.retry_at) == ("generating", None)


def test_the_database_still_refuses_a_status_the_machine_does_not_know(
    repository: ContentRepository,
) -> None:
    """The migration that added ``retrying`` rebuilt the CHECK constraint, not dropped it."""
    row = repository.insert(topic="Fractions", modality="text")
    with pytest.raises(sqlalchemy.exc.IntegrityError), repository.database.session() as session:
        session.execute(sqlalchemy.update(ContentRequest).where(ContentRequest.id == row.id)
                        .values(status="paused"))


def test_one_claim_at_a_time_and_a_stale_claim_is_taken_over(
    repository: ContentRepository,
) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    first = repository.claim(row.id, holder="a", lease_seconds=60)
    assert first is not None and first.attempt == 1
    assert repository.claim(row.id, holder="b", lease_seconds=60) is None
    later = utcnow() + timedelta(seconds=61)
    second = repository.claim(row.id, holder="b", lease_seconds=60, now=later)
    assert second is not None and second.attempt == 2
    assert not repository.set_stage(first, Stage.SCRIPT, 20, 60), "the old holder lost it"
    assert not repository.complete(first, {})
    assert repository.complete(second, {"lesson.md": "file:///x"})
    final = repository.get(row.id)
    assert final is not None and final.status == Status.COMPLETED and final.progress == 100
    assert repository.claim(row.id, holder="c", lease_seconds=60) is None
    assert not repository.fail(row.id, "too late"), "completed is terminal"


def test_a_released_claim_can_be_taken_at_once(repository: ContentRepository) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    claim = repository.claim(row.id, holder="a", lease_seconds=60)
    assert claim is not None
    assert repository.release(claim, "storage down")
    again = repository.claim(row.id, holder="a", lease_seconds=60)
    assert again is not None and again.attempt == 2
    current = repository.get(row.id)
    assert current is not None and current.error == "storage down"


def test_queued_never_overwrites_a_claimed_request(repository: ContentRepository) -> None:
    row = repository.insert(topic="Fractions", modality="text")
    assert repository.claim(row.id, holder="fast-worker", lease_seconds=60)
    assert not repository.mark_queued(row.id)
    current = repository.get(row.id)
    assert current is not None and current.status == Status.GENERATING


def test_a_failed_enqueue_leaves_a_visible_pending_request_that_resubmits(
    repository: ContentRepository,
) -> None:
    sent: list[str] = []

    def broken(request_id: str, modality: str) -> None:
        raise ConnectionError("broker unreachable")

    with pytest.raises(EnqueueFailed) as failure:
        submit(repository, broken, topic="Volcanoes", modality="video", grade_level="5")
    row = repository.get(failure.value.request_id)
    assert row is not None and row.status == Status.PENDING
    assert row.error is not None and "broker unreachable" in row.error
    assert [r.id for r in repository.list_by_status(Status.PENDING)] == [row.id]

    queued = resubmit(repository, lambda rid, _: sent.append(rid), str(row.id))
    assert sent == [str(row.id)]
    assert queued.status == Status.QUEUED and queued.error is None


def test_submit_refuses_invalid_input_before_writing(repository: ContentRepository) -> None:
    with pytest.raises(InvalidRequest, match="topic is empty"):
        submit(repository, lambda *_: None, topic=" ", modality="text")
    assert repository.list_by_status(Status.PENDING) == []


def _runner(repository: ContentRepository, tmp_path: Path, **config: float) -> ContentRunner:
    return ContentRunner(
        repository=repository, storage=LocalStorage(tmp_path / "artifacts"),
        generator=OfflineGenerator(), config=PipelineConfig(**config),  # type: ignore[arg-type]
        work_root=tmp_path / "work", lease_seconds=30,
    )


def test_the_runner_completes_once_and_redelivery_is_a_no_op(
    repository: ContentRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    row = repository.insert(topic="Magnets", modality="text", grade_level="4")
    runner = _runner(repository, tmp_path)
    seen: list[tuple[str, int]] = []
    with caplog.at_level(logging.INFO, logger="vividly_tasks.lessons.runner"):
        outcome = runner.run(
            str(row.id), progress=lambda _, stage, pct: seen.append((stage, pct))
        )
    assert "(text: encode, narrate, slides skipped)" in caplog.text
    assert outcome.kind == "completed"
    assert seen == [("validate", 0), ("script", 20), ("store", 70), ("complete", 100)]
    assert set(outcome.artifacts) == {"lesson.md", "lesson.html", "manifest.json"}
    assert runner.run(str(row.id)).kind == "noop"
    final = repository.get(row.id)
    assert final is not None and final.attempts == 1
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_an_attempt_past_its_time_limit_fails(
    repository: ContentRepository, tmp_path: Path
) -> None:
    row = repository.insert(topic="Magnets", modality="video")
    runner = _runner(repository, tmp_path, video_time_limit_seconds=0.05)
    with pytest.raises(TimeLimitExceeded):
        runner.run(str(row.id))
    final = repository.get(row.id)
    assert final is not None and final.status == Status.FAILED
    assert final.error is not None and "time limit" in final.error


def test_an_unreachable_database_is_a_transient_error(tmp_path: Path) -> None:
    from harness.services import free_port
    from vividly_tasks.lessons.errors import DatabaseUnavailable

    database = ContentDatabase(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    repository = ContentRepository(database)
    with pytest.raises(DatabaseUnavailable) as caught:
        repository.get(uuid.uuid4())
    assert isinstance(caught.value, TransientError)
    with pytest.raises(DatabaseUnavailable):
        _runner(repository, tmp_path).run(str(uuid.uuid4()))
    database.dispose()


def test_the_lease_keeper_renews_a_claim_from_its_thread(repository: ContentRepository) -> None:
    row = repository.insert(topic="Fractions", modality="video")
    claim = repository.claim(row.id, holder="slow-worker", lease_seconds=0.5)
    assert claim is not None
    with LeaseKeeper(repository, claim, lease_seconds=0.5) as keeper:
        time.sleep(1.2)  # more than twice the lease: only renewals keep it
        assert repository.claim(row.id, holder="other", lease_seconds=1) is None
        assert not keeper.lost
    time.sleep(0.6)
    assert repository.claim(row.id, holder="other", lease_seconds=1) is not None, (
        "without renewals the lease runs out and the claim is taken over"
    )


def test_an_unexpected_error_fails_the_request_instead_of_leaving_it_claimed(
    repository: ContentRepository, tmp_path: Path
) -> None:
    from vividly_tasks.lessons.errors import PermanentFailure

    class BrokenGenerator:
        name = "broken"

        def generate(self, spec: object) -> NoReturn:
            raise RuntimeError("boom")

    row = repository.insert(topic="Magnets", modality="text")
    runner = _runner(repository, tmp_path)
    runner.generator = BrokenGenerator()
    with pytest.raises(PermanentFailure, match="internal error: RuntimeError: boom"):
        runner.run(str(row.id))
    final = repository.get(row.id)
    assert final is not None and final.status == Status.FAILED and final.claim_token is None


def test_a_workers_start_sweeps_partial_copies_a_killed_writer_left(tmp_path: Path) -> None:
    import os

    from vividly_tasks.lessons.storage import LocalStorage

    storage = LocalStorage(tmp_path / "store")
    incoming = storage.root / INCOMING_DIR
    incoming.mkdir(parents=True)
    stale, fresh = incoming / "tmpold.part", incoming / "tmpnew.part"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"half a video")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert storage.sweep_temporaries() == 1  # the fresh one may be a live worker's copy
    assert not stale.exists() and fresh.exists()
    assert storage.list_keys() == []  # neither was ever an artifact


class PaidOfflineGenerator:
    """The offline generator, reporting each lesson as a paid call would (and counting them)."""

    name = "paid-offline"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, spec: LessonSpec) -> Lesson:
        self.calls += 1
        report_usage(ModelUsage("paid-model-1", prompt_tokens=800, output_tokens=700))
        return OfflineGenerator().generate(spec)


def test_an_encode_failure_resumes_at_the_encode_with_what_the_earlier_stages_kept(
    repository: ContentRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = repository.insert(topic="Volcanoes", modality="video")
    runner = _runner(repository, tmp_path, voice=Voice(narrator="silent"))  # type: ignore[arg-type]
    paid = PaidOfflineGenerator()
    runner.generator = paid
    storage = runner.storage
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # ffmpeg gone: the encode fails
    with pytest.raises(ToolMissing, match="ffmpeg"):
        runner.run(str(row.id), retry_delay=lambda exc: 30.0)

    waiting = repository.get(row.id)
    assert waiting is not None and waiting.status == Status.RETRYING
    assert waiting.retry_at is not None and waiting.error is not None
    assert 29 < (waiting.retry_at - utcnow()).total_seconds() <= 30
    assert "ffmpeg" in waiting.error and waiting.stage == "encode"
    kept = [key.rpartition("/")[2] for key in storage.list_keys(stage_prefix(row.id))]
    sections = 5
    assert "lesson.json" in kept
    assert sum(name.startswith("narration-") for name in kept) == sections
    assert sorted(name for name in kept if name.startswith("slide-")) == [
        f"slide-{n:02d}.png" for n in range(1, sections + 1)]
    assert storage.list_keys(str(row.id)) == []  # no artifact before the store stage

    monkeypatch.setenv("PATH", path)
    stages: list[str] = []
    spent: list[ModelUsage] = []
    outcome = runner.run(str(row.id), progress=lambda _, stage, __: stages.append(stage),
                         usage=lambda _, usage: spent.append(usage))
    assert outcome.kind == "completed"
    assert paid.calls == 1, "the retry wrote the lesson again"
    final = repository.get(row.id)
    assert final is not None and final.attempts == 2 and final.retry_at is None
    assert (final.model_calls, final.prompt_tokens, final.output_tokens) == (1, 800, 700)
    assert spent == [ModelUsage("paid-model-1", 800, 700, calls=1)]  # told at the start
    manifest = json.loads(storage.get_bytes(artifact_key(row.id, "manifest.json")))
    assert manifest["generator"] == "paid-offline"
    assert manifest["model"] == {"name": "paid-model-1", "calls": 1, "prompt_tokens": 800,
                                 "output_tokens": 700}
    assert storage.list_keys(stage_prefix(row.id)) == [], "the kept stages outlived the request"


def test_a_section_already_spoken_is_not_spoken_again(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "artifacts")
    kept = StageStore(storage, uuid.uuid4(), tmp_path)
    texts = ["First section.", "Second section.", "Third section."]
    first = narrate(texts, tmp_path, Voice(narrator="silent"), timeout_seconds=30, kept=kept)
    storage.delete(storage.list_keys()[1])  # as if the second section's call had failed

    spoken: list[str] = []

    class Recording:
        def load_clip(self, index: int, text: str, engine: str) -> bytes | None:
            frames = kept.load_clip(index, text, engine)
            if frames is None:
                spoken.append(text)
            return frames

        def keep_clip(self, index: int, text: str, engine: str, frames: bytes) -> None:
            kept.keep_clip(index, text, engine, frames)

    again = narrate(texts, tmp_path, Voice(narrator="silent"), timeout_seconds=30,
                    kept=Recording())
    assert spoken == ["Second section."]
    assert again.section_seconds == first.section_seconds
    # Another engine's audio is not taken for this one's.
    assert kept.load_clip(0, texts[0], "espeak-ng") is None


def test_the_retrying_migration_downgrades_and_upgrades_again(
    repository: ContentRepository,
) -> None:
    """Downgraded, a request waiting for its retry shows as it did before: generating."""
    from alembic import command

    from vividly_tasks.lessons.database import alembic_config

    row = repository.insert(topic="Fractions", modality="text")
    claim = repository.claim(row.id, holder="a", lease_seconds=60)
    assert claim is not None and repository.release(claim, "attempt 1 failed", utcnow())
    engine = repository.database.engine
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert current_revision(engine) == "0002"
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text(
            "SELECT status FROM content_requests")).scalar_one() == "generating"
    repository.database.migrate()
    assert current_revision(engine) == "0006"
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
