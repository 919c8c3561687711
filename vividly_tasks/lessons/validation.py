"""The first pipeline stage, also used by the submit API: is this request possible at all?

A request that fails here can never succeed, so it fails fast with the reason recorded and is
not retried.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from vividly_tasks.lessons.errors import InvalidRequest


class Modality(StrEnum):
    TEXT = "text"
    VIDEO = "video"


class GradeBand(StrEnum):
    """Reading level the offline generator writes for."""

    EARLY = "early"  # K-2
    ELEMENTARY = "elementary"  # 3-5
    MIDDLE = "middle"  # 6-8
    HIGH = "high"  # 9-12


DEFAULT_SUBJECT = "General studies"
_GRADE_PATTERN = re.compile(r"^(?:grade\s*)?(k|kindergarten|\d{1,2})(?:st|nd|rd|th)?$")


@dataclass(frozen=True)
class LessonSpec:
    """A validated request: what the generator is asked to write."""

    topic: str
    subject: str
    grade: int | None  # 0 is kindergarten; None means "not given"
    modality: Modality

    @property
    def grade_label(self) -> str:
        if self.grade is None:
            return "All grades"
        return "Kindergarten" if self.grade == 0 else f"Grade {self.grade}"

    @property
    def band(self) -> GradeBand:
        if self.grade is None:
            return GradeBand.MIDDLE
        if self.grade <= 2:
            return GradeBand.EARLY
        if self.grade <= 5:
            return GradeBand.ELEMENTARY
        return GradeBand.MIDDLE if self.grade <= 8 else GradeBand.HIGH


def _clean_text(name: str, value: object, max_chars: int, *, required: bool) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{name} is {type(value).__name__}, not text")
    if value is None or not value.strip():
        if required:
            raise InvalidRequest(f"{name} is empty")
        return None
    value = " ".join(value.split())
    if len(value) > max_chars:
        raise InvalidRequest(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"} for char in value):
        raise InvalidRequest(f"{name} contains control or unassigned characters")
    return value


def parse_grade(value: str | None) -> int | None:
    """``K``, ``kindergarten``, ``3``, ``3rd``, ``grade 3`` ... up to 12; empty means none."""
    if value is None or not value.strip():
        return None
    match = _GRADE_PATTERN.match(value.strip().lower())
    if match is None:
        raise InvalidRequest(f"grade level {value!r} is not K or 1-12")
    token = match.group(1)
    grade = 0 if token.startswith("k") else int(token)
    if grade > 12:
        raise InvalidRequest(f"grade level {value!r} is not K or 1-12")
    return grade


def validate(
    *, topic: str | None, modality: str | None, subject: str | None = None,
    grade_level: str | None = None, max_topic_chars: int, max_field_chars: int,
) -> LessonSpec:
    """The request as a ``LessonSpec``, or ``InvalidRequest`` with the reason."""
    try:
        parsed_modality = Modality(modality or "")
    except ValueError:
        raise InvalidRequest(
            f"modality {modality!r} is not one of {', '.join(m.value for m in Modality)}"
        ) from None
    clean_topic = _clean_text("topic", topic, max_topic_chars, required=True)
    assert clean_topic is not None
    clean_subject = _clean_text("subject", subject, max_field_chars, required=False)
    clean_grade = _clean_text("grade level", grade_level, max_field_chars, required=False)
    return LessonSpec(
        topic=clean_topic,
        subject=clean_subject or DEFAULT_SUBJECT,
        grade=parse_grade(clean_grade),
        modality=parsed_modality,
    )
