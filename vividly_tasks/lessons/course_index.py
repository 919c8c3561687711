"""A course's index: every lesson and video in order, the totals, and the failures with their
reasons, as Markdown and HTML in the artifact storage (``courses/<course-id>/index.md`` and
``index.html``). No Celery here: the task that builds it is ``course_tasks.build_course``.

Built from the database rows (``courses.CourseRepository.entries``), never from what Celery
reported, so a lesson that failed, one replaced by a resubmission and one still at work each
show as the database has them. Links to a lesson's artifacts are relative
(``../../<request-id>/lesson.html``) when the lesson was stored in the same storage as the index,
so the folder can be served or copied as it is; otherwise the artifact's URI.

Totals: lessons (completed, failed, at work), minutes of video (the narration's length, from
each video's manifest, read once and kept in ``course_lessons``), the model's tokens over every
attempt of every request the course made (replaced ones included: they were paid for) and what
those cost at ``MODEL_PRICES_USD_PER_MILLION_TOKENS`` (docs/content.md, "What a course costs").
"""

from __future__ import annotations

import html
import json
import logging
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from vividly_tasks.lessons.courses import (
    CourseEntry,
    CourseRepository,
    all_finished,
    fingerprint,
)
from vividly_tasks.lessons.models import ContentRequest, Course
from vividly_tasks.lessons.status import Status
from vividly_tasks.lessons.storage import Storage, artifact_key, check_key

logger = logging.getLogger(__name__)

#: List prices in US dollars per million tokens (prompt, output; thinking tokens are output),
#: Gemini API paid tier and Vertex AI standard, prompts up to 200k tokens, as Google published
#: them in 2025. A model answering under a longer name (``gemini-2.5-flash-001``) is priced by
#: the longest name here it starts with; tokens of a model not here are counted, not priced.
MODEL_PRICES_USD_PER_MILLION_TOKENS: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
}
INDEX_NAMES = ("index.md", "index.html")
CONTENT_TYPES = {
    "index.md": "text/markdown; charset=utf-8", "index.html": "text/html; charset=utf-8",
}
#: Builds of one course that find its rows changed while they wrote, before they give up (the
#: next build, which the change implies, writes the index again).
BUILD_ROUNDS = 5
#: Longest error text the index quotes per lesson.
MAX_REASON_CHARS = 300


def index_key(course_id: uuid.UUID | str, name: str) -> str:
    return check_key(f"courses/{uuid.UUID(str(course_id))}/{name}")


def price_of(model: str | None) -> tuple[float, float] | None:
    name = (model or "").removeprefix("models/")
    known = [key for key in MODEL_PRICES_USD_PER_MILLION_TOKENS if name.startswith(key)]
    return MODEL_PRICES_USD_PER_MILLION_TOKENS[max(known, key=len)] if known else None


@dataclass
class Totals:
    lessons: int = 0
    completed: int = 0
    failed: int = 0
    at_work: int = 0
    videos: int = 0
    video_seconds: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: Models whose tokens were spent but have no price here.
    unpriced_models: set[str] = field(default_factory=set)

    def spend(self, request: ContentRequest) -> None:
        prompt, output = request.prompt_tokens or 0, request.output_tokens or 0
        self.prompt_tokens += prompt
        self.output_tokens += output
        if not prompt and not output:
            return
        price = price_of(request.model_name)
        if price is None:
            self.unpriced_models.add(request.model_name or "unknown")
        else:
            self.cost_usd += (prompt * price[0] + output * price[1]) / 1_000_000

    @property
    def video_minutes(self) -> float:
        return self.video_seconds / 60

    def as_dict(self) -> dict[str, object]:
        return {
            "lessons": self.lessons, "completed": self.completed, "failed": self.failed,
            "at_work": self.at_work, "videos": self.videos,
            "video_minutes": round(self.video_minutes, 2), "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens, "cost_usd": round(self.cost_usd, 6),
            "unpriced_models": sorted(self.unpriced_models),
        }


@dataclass(frozen=True)
class IndexLine:
    """One lesson as the index shows it."""

    position: int
    request_id: str
    topic: str
    modality: str
    grade: str | None
    subject: str | None
    status: str
    title: str | None
    error: str | None
    #: Artifact name -> link (relative where it can be).
    links: dict[str, str]
    video_seconds: float | None
    #: How many earlier requests of this position failed and were replaced.
    replaced: int


@dataclass(frozen=True)
class CourseIndex:
    course_id: str
    name: str
    source: str | None
    lines: list[IndexLine]
    totals: Totals

    def failures(self) -> list[IndexLine]:
        return [line for line in self.lines if line.status == Status.FAILED]


def totals_of(entries: Sequence[CourseEntry], replaced: Sequence[ContentRequest]) -> Totals:
    totals = Totals(lessons=len(entries))
    for entry in entries:
        request = entry.request
        if request.status == Status.COMPLETED:
            totals.completed += 1
        elif request.status == Status.FAILED:
            totals.failed += 1
        else:
            totals.at_work += 1
        if request.modality == "video" and request.status == Status.COMPLETED:
            totals.videos += 1
            totals.video_seconds += entry.lesson.video_seconds or 0.0
        totals.spend(request)
    for request in replaced:
        totals.spend(request)
    return totals


def one_line(text: str | None, limit: int = MAX_REASON_CHARS) -> str | None:
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


# --- rendering ------------------------------------------------------------------------------
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~])")


def md(text: str) -> str:
    """``text`` shown literally in Markdown (a table cell or a link's text)."""
    flat = " ".join(text.split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def _describe(line: IndexLine) -> str:
    parts = [line.modality, line.subject or "", f"grade {line.grade}" if line.grade else ""]
    return ", ".join(part for part in parts if part)


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def _summary(totals: Totals) -> list[str]:
    cost = f"${totals.cost_usd:.4f}"
    if totals.unpriced_models:
        cost += f" (tokens of {', '.join(sorted(totals.unpriced_models))} not priced)"
    return [
        f"{totals.lessons} lessons: {totals.completed} completed, {totals.failed} failed, "
        f"{totals.at_work} at work",
        f"{totals.videos} video{'s' if totals.videos != 1 else ''}, "
        f"{totals.video_minutes:.1f} minutes",
        f"{totals.prompt_tokens:,} prompt + {totals.output_tokens:,} output tokens",
        f"cost {cost} at list prices",
    ]


def render_markdown(index: CourseIndex) -> str:
    out = [f"# {md(index.name)}", ""]
    if index.source:
        out += [f"Course `{index.course_id}`, from {md(index.source)}.", ""]
    out += [f"- {item}" for item in _summary(index.totals)]
    out += ["", "## Lessons", "", "| # | lesson | kind | status | links |", "|---|---|---|---|---|"]
    for line in index.lines:
        title = md(line.title or line.topic)
        main = line.links.get("lesson.html") or line.links.get("lesson.md")
        shown = f"[{title}]({main})" if main else title
        links = " · ".join(f"[{name.removeprefix('lesson.')}]({href})"
                           for name, href in line.links.items())
        status = line.status + (f" ({_minutes(line.video_seconds)})"
                                if line.video_seconds else "")
        out.append(f"| {line.position} | {shown} | {md(_describe(line))} | {status} | "
                   f"{links} |")
    failures = index.failures()
    if failures:
        out += ["", "## Failures", ""]
        out += [f"- Lesson {line.position}, {md(line.topic)} (request `{line.request_id}`): "
                f"{md(line.error or 'no reason recorded')}" for line in failures]
        out += ["", "Resubmit them with `vividly course resubmit "
                f"{index.course_id}`; the index is rebuilt when they finish."]
    return "\n".join(out) + "\n"


def render_html(index: CourseIndex) -> str:
    e = html.escape
    rows = []
    for line in index.lines:
        title = e(line.title or line.topic)
        main = line.links.get("lesson.html") or line.links.get("lesson.md")
        shown = f'<a href="{e(main)}">{title}</a>' if main else title
        links = " ".join(f'<a href="{e(href)}">{e(name.removeprefix("lesson."))}</a>'
                         for name, href in line.links.items())
        status = e(line.status) + (f" ({_minutes(line.video_seconds)})"
                                   if line.video_seconds else "")
        rows.append(f'<tr class="{e(line.status)}"><td>{line.position}</td><td>{shown}</td>'
                    f"<td>{e(_describe(line))}</td><td>{status}</td><td>{links}</td></tr>")
    failures = "".join(
        f"<li>Lesson {line.position}, {e(line.topic)} (request <code>{e(line.request_id)}"
        f"</code>): {e(line.error or 'no reason recorded')}</li>"
        for line in index.failures()
    )
    summary = "".join(f"<li>{e(item)}</li>" for item in _summary(index.totals))
    source = (f"<p>Course <code>{e(index.course_id)}</code>, from {e(index.source)}.</p>"
              if index.source else "")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(index.name)}</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;"
        "padding:.3rem .5rem;text-align:left}tr.failed td{background:#fdecea}</style>"
        f"</head><body><h1>{e(index.name)}</h1>{source}<ul>{summary}</ul>"
        "<h2>Lessons</h2><table><thead><tr><th>#</th><th>lesson</th><th>kind</th>"
        f"<th>status</th><th>links</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + (f"<h2>Failures</h2><ul>{failures}</ul>" if failures else "")
        + "</body></html>\n"
    )


# --- building -------------------------------------------------------------------------------
class CourseIndexBuilder:
    """Reads a course's rows, writes its index to the storage and records what it showed."""

    def __init__(self, courses: CourseRepository, storage: Storage) -> None:
        self.courses = courses
        self.storage = storage

    def build(self, course_id: uuid.UUID | str) -> tuple[CourseIndex, bool]:
        """Write the index; returns it and whether every lesson had finished. A build whose
        rows changed while it wrote builds again (up to ``BUILD_ROUNDS``), so of two builds
        racing, the index last written shows the latest rows."""
        course = self.courses.get(course_id)
        if course is None:
            raise LookupError(f"unknown course {course_id}")
        for _ in range(BUILD_ROUNDS):
            entries = self.courses.entries(course.id)
            built_from = fingerprint(entries)
            index = self.index_of(course, entries)
            artifacts = self.write(course.id, index)
            if fingerprint(self.courses.entries(course.id)) == built_from:
                self.courses.record_index(course.id, artifacts, built_from)
                return index, all_finished(entries)
        return index, all_finished(entries)

    def index_of(self, course: Course, entries: Sequence[CourseEntry]) -> CourseIndex:
        lines = [self._line(course.id, entry) for entry in entries]
        replaced_ids = [uuid.UUID(item["request_id"]) for entry in entries
                        for item in entry.lesson.replaced or []]
        with self.courses.database.session() as session:
            replaced = list(session.scalars(
                select(ContentRequest).where(ContentRequest.id.in_(replaced_ids))
            )) if replaced_ids else []
        # The facts just read from manifests are in the entries' lessons (noted above).
        return CourseIndex(str(course.id), course.name, course.source, lines,
                           totals_of(entries, replaced))

    def _line(self, course_id: uuid.UUID, entry: CourseEntry) -> IndexLine:
        request = entry.request
        artifacts = {name: str(uri) for name, uri in (request.artifacts or {}).items()}
        if request.status == Status.COMPLETED and entry.lesson.title is None:
            self._read_facts(course_id, entry, artifacts)
        links: dict[str, str] = {
            name: self._link(request.id, name, artifacts[name])
            for name in ("lesson.html", "lesson.md", "lesson.mp4") if name in artifacts
        }
        return IndexLine(
            position=entry.position, request_id=str(request.id), topic=request.topic,
            modality=request.modality, grade=request.grade_level, subject=request.subject,
            status=request.status, title=entry.lesson.title,
            error=one_line(request.error) if request.status != Status.COMPLETED else None,
            links=links, video_seconds=entry.lesson.video_seconds,
            replaced=len(entry.lesson.replaced or []),
        )

    def _read_facts(self, course_id: uuid.UUID, entry: CourseEntry,
                    artifacts: dict[str, str]) -> None:
        """Title and narrated length from the lesson's manifest, kept so later builds do not
        read it again. A manifest that cannot be read leaves the topic as the title."""
        try:
            manifest = json.loads(self.storage.get_bytes(
                artifact_key(entry.request.id, "manifest.json")))
        except (OSError, ValueError) as exc:
            logger.warning("course %s: the manifest of lesson %d (%s) is unreadable: %s",
                           course_id, entry.position, entry.request.id, exc)
            return
        title = manifest.get("title") if isinstance(manifest.get("title"), str) else None
        seconds = (manifest.get("narration") or {}).get("seconds") if "lesson.mp4" in \
            artifacts else None
        video_seconds = float(seconds) if isinstance(seconds, int | float) else None
        self.courses.note_lesson_facts(course_id, entry.position, title=title,
                                       video_seconds=video_seconds)
        entry.lesson.title, entry.lesson.video_seconds = title, video_seconds

    def _link(self, request_id: uuid.UUID, name: str, uri: str) -> str:
        """Relative to ``courses/<id>/`` when the artifact is in this storage."""
        try:
            here = self.storage.uri(artifact_key(request_id, name))
        except ValueError:
            return uri
        return f"../../{request_id}/{name}" if here == uri else uri

    def write(self, course_id: uuid.UUID, index: CourseIndex) -> dict[str, str]:
        artifacts = {}
        with tempfile.TemporaryDirectory(prefix="vividly-course-") as workdir:
            for name, text in (("index.md", render_markdown(index)),
                               ("index.html", render_html(index))):
                path = Path(workdir) / name
                path.write_text(text, encoding="utf-8")
                artifacts[name] = self.storage.put_file(index_key(course_id, name), path,
                                                        CONTENT_TYPES[name])
        return artifacts
