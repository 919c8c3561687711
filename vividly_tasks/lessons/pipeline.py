"""The pipeline stages: validate -> lesson script -> (video) narrate -> slides -> encode ->
store. Text requests skip the video stages. No Celery here: progress goes to a reporter.

Everything is built in a private work directory; only the store stage writes the request's
artifacts, and it writes ``manifest.json`` last, so a complete manifest means a complete set.

Resumable by stage: what a stage made is kept (``stages.StageStore``: the lesson, each
section's narration, the slides) before the next stage starts, and an attempt that finds it
kept uses it, so a retry starts at the first unfinished stage and never pays the model twice.
The manifest's ``model`` is the request's spending over every attempt, as the row's.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vividly_tasks import spans
from vividly_tasks.lessons.errors import TimeLimitExceeded
from vividly_tasks.lessons.generator import (
    NO_USAGE,
    LessonGenerator,
    ModelUsage,
    usage_reported_to,
)
from vividly_tasks.lessons.lesson import Lesson, render_html, render_markdown
from vividly_tasks.lessons.narration import Voice, narrate
from vividly_tasks.lessons.stages import StageStore
from vividly_tasks.lessons.status import Stage
from vividly_tasks.lessons.storage import Storage, artifact_key
from vividly_tasks.lessons.validation import LessonSpec, Modality, validate
from vividly_tasks.lessons.video import FRAME_RATE_FPS, HEIGHT_PX, WIDTH_PX, encode, render_slides

logger = logging.getLogger(__name__)

#: Progress (percent) reached when each stage starts, per modality.
STAGE_PERCENT: dict[Modality, dict[Stage, int]] = {
    Modality.TEXT: {Stage.VALIDATE: 0, Stage.SCRIPT: 20, Stage.STORE: 70, Stage.COMPLETE: 100},
    Modality.VIDEO: {
        Stage.VALIDATE: 0, Stage.SCRIPT: 5, Stage.NARRATE: 15, Stage.SLIDES: 35,
        Stage.ENCODE: 50, Stage.STORE: 85, Stage.COMPLETE: 100,
    },
}
#: The span of each stage when tracing is on (vividly_tasks.spans).
STAGE_SPANS = {Stage.SCRIPT: "generate", Stage.NARRATE: "narrate", Stage.SLIDES: "render",
               Stage.ENCODE: "encode", Stage.STORE: "store"}
#: Stages a text request skips (the saving is logged at completion).
VIDEO_ONLY_STAGES = frozenset(
    STAGE_PERCENT[Modality.VIDEO].keys() - STAGE_PERCENT[Modality.TEXT].keys()
)
CONTENT_TYPES = {
    "lesson.md": "text/markdown; charset=utf-8",
    "lesson.html": "text/html; charset=utf-8",
    "lesson.mp4": "video/mp4",
    "manifest.json": "application/json",
}


class ProgressReporter(Protocol):
    """Told when a stage starts (may raise ``ClaimLost`` to stop the pipeline) and what each
    call to a hosted model cost."""

    def stage(self, stage: Stage, percent: int) -> None: ...

    def usage(self, usage: ModelUsage) -> None: ...


@dataclass(frozen=True)
class RequestFields:
    """What the pipeline reads of a request row."""

    id: uuid.UUID
    topic: str | None
    modality: str | None
    subject: str | None = None
    grade_level: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    max_topic_chars: int = 200
    max_field_chars: int = 100
    voice: Voice = field(default_factory=Voice)
    text_time_limit_seconds: float = 120.0
    video_time_limit_seconds: float = 1800.0

    def time_limit_seconds(self, modality: Modality) -> float:
        if modality is Modality.VIDEO:
            return self.video_time_limit_seconds
        return self.text_time_limit_seconds


@dataclass(frozen=True)
class PipelineResult:
    artifacts: dict[str, str]
    manifest: dict[str, Any]


class _Clock:
    """The attempt's deadline: checked between stages, and the timeout of every subprocess."""

    def __init__(self, limit_seconds: float) -> None:
        self.limit_seconds = limit_seconds
        self.deadline = time.monotonic() + limit_seconds

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeLimitExceeded(f"attempt ran past its {self.limit_seconds:g} s time limit")
        return left


@spans.staged
def run_pipeline(
    request: RequestFields, *, config: PipelineConfig, generator: LessonGenerator,
    storage: Storage, reporter: ProgressReporter, workdir: Path,
    spent_before: ModelUsage = NO_USAGE,
) -> PipelineResult:
    """Run every stage for ``request`` not finished by an earlier attempt (``spent_before``:
    what those spent on the model); raises ``InvalidRequest``, ``PermanentFailure``,
    ``TransientError`` or ``ClaimLost`` (from the reporter)."""
    reporter.stage(Stage.VALIDATE, 0)
    spec = validate(
        topic=request.topic, modality=request.modality, subject=request.subject,
        grade_level=request.grade_level, max_topic_chars=config.max_topic_chars,
        max_field_chars=config.max_field_chars,
    )
    percent = STAGE_PERCENT[spec.modality]
    clock = _Clock(config.time_limit_seconds(spec.modality))

    def enter(stage: Stage) -> None:
        clock.remaining()
        reporter.stage(stage, percent[stage])
        spans.stage(STAGE_SPANS[stage], **{"vividly.stage": stage.value,
                                           "vividly.request_id": str(request.id)})

    kept = StageStore(storage, request.id, workdir)
    enter(Stage.SCRIPT)
    spent = spent_before

    def count(usage: ModelUsage) -> None:
        nonlocal spent
        spent += usage
        reporter.usage(usage)
        spans.add_usage(model=usage.model, prompt_tokens=usage.prompt_tokens,
                        output_tokens=usage.output_tokens, calls=usage.calls)

    lesson, writer = _lesson(request, spec, generator, kept, count)
    spans.annotate(**{"vividly.generator": writer})
    files = {
        "lesson.md": _write(workdir / "lesson.md", render_markdown(lesson)),
        "lesson.html": _write(workdir / "lesson.html", render_html(lesson)),
    }
    manifest: dict[str, Any] = _manifest(request.id, spec, writer, lesson.title)
    manifest["sections"] = [{"heading": s.heading} for s in lesson.sections]

    if spec.modality is Modality.VIDEO:
        enter(Stage.NARRATE)
        narration = narrate(
            [section.narration for section in lesson.sections], workdir, config.voice,
            timeout_seconds=clock.remaining(), kept=kept,
        )
        enter(Stage.SLIDES)
        slides = kept.slides(len(lesson.sections))
        if slides is None:
            slides = render_slides(lesson, workdir)
            kept.keep_slides(slides)
        enter(Stage.ENCODE)
        files["lesson.mp4"] = encode(
            lesson, slides, narration, workdir / "lesson.mp4", timeout_seconds=clock.remaining()
        )
        start = 0.0
        for entry, seconds in zip(manifest["sections"], narration.section_seconds, strict=True):
            entry |= {"start_seconds": round(start, 3), "end_seconds": round(start + seconds, 3)}
            start += seconds
        manifest["narration"] = {
            "engine": narration.engine, "seconds": round(narration.total_seconds, 3),
        }
        manifest["video"] = {
            "width": WIDTH_PX, "height": HEIGHT_PX, "fps": FRAME_RATE_FPS, "slides": len(slides),
        }

    if spent.calls or spent.prompt_tokens or spent.output_tokens:
        manifest["model"] = {
            "name": spent.model, "calls": spent.calls,
            "prompt_tokens": spent.prompt_tokens, "output_tokens": spent.output_tokens,
        }
    enter(Stage.STORE)
    artifacts = {
        name: storage.put_file(artifact_key(request.id, name), path, CONTENT_TYPES[name])
        for name, path in files.items()
    }
    manifest["artifacts"] = dict(artifacts)
    manifest_path = _write(workdir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    artifacts["manifest.json"] = storage.put_file(
        artifact_key(request.id, "manifest.json"), manifest_path, CONTENT_TYPES["manifest.json"]
    )
    return PipelineResult(artifacts=artifacts, manifest=manifest)


def _lesson(
    request: RequestFields, spec: LessonSpec, generator: LessonGenerator, kept: StageStore,
    count: Callable[[ModelUsage], None],
) -> tuple[Lesson, str]:
    """The lesson and the name of its generator: an earlier attempt's if it was kept, else
    written now (each call's tokens told to ``count``) and kept before the next stage."""
    resumed = kept.lesson()
    if resumed is not None:
        logger.info(
            "request %s: the lesson an earlier attempt wrote is used (no model call)",
            request.id, extra={"request_id": str(request.id), "resumed_stage": "script"},
        )
        return resumed
    with usage_reported_to(count):
        lesson = generator.generate(spec)
    kept.keep_lesson(lesson, generator.name)
    return lesson, generator.name


def _manifest(
    request_id: uuid.UUID, spec: LessonSpec, generator: str, title: str
) -> dict[str, Any]:
    return {
        "request_id": str(request_id),
        "title": title,
        "topic": spec.topic,
        "subject": spec.subject,
        "grade": spec.grade_label,
        "modality": spec.modality.value,
        "generator": generator,
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
