"""A lesson as data, and its renderings: Markdown and a standalone HTML page.

Both renderings come from the same structure, so they never disagree; the video's slides and
narration come from it too (one slide per section).
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Section:
    """One section of a lesson: a heading, paragraphs, a list, and what the narrator says."""

    heading: str
    narration: str
    paragraphs: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    ordered: bool = False


@dataclass(frozen=True)
class QuizItem:
    question: str
    answer: str


@dataclass(frozen=True)
class Lesson:
    title: str
    topic: str
    subject: str
    grade_label: str
    objectives: tuple[str, ...]
    sections: tuple[Section, ...]
    quiz: tuple[QuizItem, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lesson:
        """The lesson ``as_dict`` gave (lists back to tuples)."""
        return cls(
            title=data["title"], topic=data["topic"], subject=data["subject"],
            grade_label=data["grade_label"], objectives=tuple(data["objectives"]),
            sections=tuple(
                Section(heading=s["heading"], narration=s["narration"],
                        paragraphs=tuple(s["paragraphs"]), items=tuple(s["items"]),
                        ordered=bool(s["ordered"]))
                for s in data["sections"]
            ),
            quiz=tuple(QuizItem(question=q["question"], answer=q["answer"])
                       for q in data["quiz"]),
        )


#: Marks that already end a sentence: a title ending in one is not given a second full stop.
SENTENCE_ENDS = (".", "!", "?", "…")


def as_sentence(text: str) -> str:
    """``text`` ending with a full stop, unless it already ends a sentence (``"Energy."`` is
    not read as "Energy.." by the narrator)."""
    text = text.rstrip()
    return text if text.endswith(SENTENCE_ENDS) else f"{text}."


def render_markdown(lesson: Lesson) -> str:
    lines = [f"# {lesson.title}", "", f"*{lesson.subject} · {lesson.grade_label}*", ""]
    for section in lesson.sections:
        lines += [f"## {section.heading}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        if section.items:
            for number, item in enumerate(section.items, start=1):
                lines.append(f"{number}. {item}" if section.ordered else f"- {item}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1d2433}h1{color:#23408e}h2{border-bottom:1px solid #d8deea;"
    "padding-bottom:.2rem}.meta{color:#5b6478;font-style:italic}"
)


def render_html(lesson: Lesson) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(lesson.title)}</title>",
        f"<style>{HTML_STYLE}</style>",
        "</head>",
        "<body>",
        "<article>",
        f"<h1>{esc(lesson.title)}</h1>",
        f'<p class="meta">{esc(lesson.subject)} · {esc(lesson.grade_label)}</p>',
    ]
    for section in lesson.sections:
        parts += ["<section>", f"<h2>{esc(section.heading)}</h2>"]
        parts += [f"<p>{esc(paragraph)}</p>" for paragraph in section.paragraphs]
        if section.items:
            tag = "ol" if section.ordered else "ul"
            parts.append(f"<{tag}>")
            parts += [f"<li>{esc(item)}</li>" for item in section.items]
            parts.append(f"</{tag}>")
        parts.append("</section>")
    parts += ["</article>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
