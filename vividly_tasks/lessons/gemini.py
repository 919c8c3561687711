"""Lessons written by a hosted model: Gemini through the official ``google-genai`` SDK.

The model is asked for the lesson's own schema (``LessonDraft``: introduction, objectives,
sections, a worked example, a quiz with answers) as structured output, in words for the
request's grade band; its answer is validated and the ``Lesson`` built from it, with the same
section layout as the offline generator's, so the renderings and the video do not change.

What can go wrong, and what it becomes:

- a rate limit (429 / ``RESOURCE_EXHAUSTED``), a server error (5xx), a timeout or a refused
  connection: ``ServiceUnavailable`` (transient), carrying the server's ``Retry-After`` (or the
  ``RetryInfo`` delay Google's APIs put in the error body), which the task's retry honours;
- credentials or permissions the worker lacks (401/403), or a model name the endpoint does not
  know (404): also transient, since it is the worker's configuration, not the request;
- a prompt or an answer blocked by the model's safety filters, or another refusal:
  ``PermanentFailure`` with the reason;
- an answer that is not JSON, breaks the schema, or was cut at the token limit: asked again,
  up to ``attempts`` calls in one delivery, then ``PermanentFailure`` with the last reason.

Every call's tokens are reported (``report_usage``) as soon as it returns, valid answer or not.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from vividly_tasks.lessons.errors import PermanentFailure, ServiceUnavailable
from vividly_tasks.lessons.generator import ModelUsage, report_usage
from vividly_tasks.lessons.lesson import Lesson, QuizItem, Section, as_sentence
from vividly_tasks.lessons.validation import GradeBand, LessonSpec

SERVICE = "the lesson model (Gemini)"
#: Finish reasons that mean the model's filters withheld the answer.
BLOCKED_FINISH_REASONS = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
})
#: HTTP statuses that are the worker's configuration rather than the request.
CONFIGURATION_STATUSES = {401: "credentials", 403: "permission", 404: "model or endpoint"}
VERTEX_ROLE = "roles/aiplatform.user"

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Narration = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]


class _Draft(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DraftSection(_Draft):
    heading: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]
    paragraphs: list[Text] = Field(min_length=1, max_length=5)
    key_points: list[Line] = Field(default_factory=list, max_length=8)
    narration: Narration = Field(description="What the narrator says over this section's slide.")


class DraftExample(_Draft):
    question: Text
    steps: list[Line] = Field(min_length=2, max_length=8)
    answer: Text
    narration: Narration


class DraftQuizItem(_Draft):
    question: Line
    answer: Text


class LessonDraft(_Draft):
    """The structured answer asked of the model."""

    title: Line
    introduction: Text
    objectives: list[Line] = Field(min_length=2, max_length=6)
    sections: list[DraftSection] = Field(min_length=1, max_length=6)
    worked_example: DraftExample
    quiz: list[DraftQuizItem] = Field(min_length=2, max_length=8)


#: How the prompt asks for each grade band (the offline generator's voices, as instructions).
AUDIENCES: dict[GradeBand, str] = {
    GradeBand.EARLY: "children in kindergarten to grade 2 (ages 5 to 8): very short sentences, "
    "everyday words, one idea at a time, a warm voice, no jargon",
    GradeBand.ELEMENTARY: "pupils in grades 3 to 5 (ages 8 to 11): short clear sentences, "
    "every new word defined, concrete examples from everyday life",
    GradeBand.MIDDLE: "students in grades 6 to 8 (ages 11 to 14): precise definitions, the key "
    "components and how they interact, reasoning shown step by step",
    GradeBand.HIGH: "students in grades 9 to 12 (ages 14 to 18): rigorous definitions, "
    "mechanisms and assumptions, quantitative where the subject allows, the limits of the model",
}
SYSTEM_INSTRUCTION = (
    "You write short, accurate lessons for schools. Answer only with JSON that follows the "
    "given schema. Each section's narration is what a narrator reads aloud over that "
    "section's slide: plain sentences, no markup, no lists."
)


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten")


def schema_bounds(field: str) -> tuple[int, int]:
    """The least and most items ``LessonDraft`` accepts in list ``field``."""
    metadata = LessonDraft.model_fields[field].metadata
    low = next(m.min_length for m in metadata if hasattr(m, "min_length"))
    high = next(m.max_length for m in metadata if hasattr(m, "max_length"))
    return int(low), int(high)


def count_of(field: str) -> str:
    """How many items of ``field`` the prompt asks for: the schema's bounds, in words, so the
    prompt never asks for what the schema would refuse (or less than it allows)."""
    low, high = schema_bounds(field)
    return f"{NUMBER_WORDS[low]} to {NUMBER_WORDS[high]}"


def lesson_prompt(spec: LessonSpec, rejected: str | None = None) -> str:
    """The user prompt for ``spec``; ``rejected`` says why the previous answer was refused."""
    lines = [
        f"Write a lesson about: {spec.topic}",
        f"Subject: {spec.subject}",
        f"Grade: {spec.grade_label} (grade band: {spec.band.value})",
        f"Audience: {AUDIENCES[spec.band]}.",
        f"Include an introduction, {count_of('objectives')} learning objectives, "
        f"{count_of('sections')} sections that explain the topic, one worked example with "
        f"numbered steps and its answer, and a quiz of {count_of('quiz')} questions with "
        "their answers.",
    ]
    if spec.modality.value == "video":
        lines.append("The lesson becomes a narrated video: keep each narration under 120 words.")
    if rejected:
        lines.append(f"Your previous answer was rejected ({rejected}); follow the schema exactly.")
    return "\n".join(lines)


def lesson_from_draft(draft: LessonDraft, spec: LessonSpec) -> Lesson:
    """The lesson, laid out as the offline generator lays out its own."""
    example, quiz = draft.worked_example, tuple(
        QuizItem(question=item.question, answer=item.answer) for item in draft.quiz
    )
    sections = (
        Section(
            heading="What you will learn", paragraphs=(draft.introduction,),
            items=tuple(draft.objectives),
            narration=f"{as_sentence(draft.title)} {draft.introduction}",
        ),
        *(
            Section(heading=s.heading, paragraphs=tuple(s.paragraphs),
                    items=tuple(s.key_points), narration=s.narration)
            for s in draft.sections
        ),
        Section(
            heading="Worked example", paragraphs=(example.question,),
            items=(*example.steps, f"Answer: {example.answer}"), ordered=True,
            narration=example.narration,
        ),
        Section(
            heading="Quiz", items=tuple(item.question for item in quiz), ordered=True,
            narration=f"Now a short quiz with {len(quiz)} questions. Pause and answer them.",
        ),
        Section(
            heading="Answers", items=tuple(item.answer for item in quiz), ordered=True,
            narration=f"Here are the answers. Well done for learning about {spec.topic}.",
        ),
    )
    return Lesson(
        title=draft.title, topic=spec.topic, subject=spec.subject, grade_label=spec.grade_label,
        objectives=tuple(draft.objectives), sections=sections, quiz=quiz,
    )


@dataclass(frozen=True)
class GeminiConfig:
    model: str = "gemini-2.5-flash"
    #: A Gemini API key; without one, Vertex AI with Application Default Credentials.
    api_key: str | None = None
    project: str | None = None
    location: str = "global"
    base_url: str | None = None
    temperature: float = 0.4
    max_output_tokens: int = 8192
    timeout_seconds: float = 90.0
    attempts: int = 2

    @property
    def backend(self) -> str:
        return "Gemini API" if self.api_key else f"Vertex AI ({self.project}, {self.location})"


class InvalidAnswer(Exception):
    """The model answered, but not with a usable lesson (asked again, up to the bound)."""


class GeminiGenerator:
    """``LessonGenerator`` on the google-genai SDK. The client is made on first use, in the
    process that uses it (after a worker forked)."""

    name = "gemini"

    def __init__(self, config: GeminiConfig) -> None:
        self.config = config
        self._client: Any = None

    def generate(self, spec: LessonSpec) -> Lesson:
        rejected: str | None = None
        for _ in range(self.config.attempts):
            response = self._call(lesson_prompt(spec, rejected))
            report_usage(usage_of(response, self.config.model))
            try:
                return lesson_from_draft(self._draft(response), spec)
            except InvalidAnswer as exc:
                rejected = str(exc)
        raise PermanentFailure(
            f"{SERVICE} gave no valid lesson in {self.config.attempts} calls: {rejected}"
        )

    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.config)
        return self._client

    def _call(self, prompt: str) -> Any:
        from google.genai import errors, types  # noqa: PLC0415 - 1 s to import: when chosen

        config = types.GenerateContentConfig(
            system_instruction=SYSTEM_INSTRUCTION,
            response_mime_type="application/json",
            response_json_schema=LessonDraft.model_json_schema(),
            temperature=self.config.temperature,
            max_output_tokens=self.config.max_output_tokens,
            # No tools are sent, so automatic function calling has nothing to call; left on,
            # the SDK announces it at INFO on every call ("AFC is enabled with max remote
            # calls: 10."). Off, the call takes the SDK's plain path and says nothing.
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        try:
            return self.client().models.generate_content(
                model=self.config.model, contents=prompt, config=config
            )
        except errors.APIError as exc:
            raise api_error(exc, self.config) from exc
        except Exception as exc:
            if is_connection_error(exc):
                raise ServiceUnavailable(
                    f"{SERVICE} did not answer: {type(exc).__name__}: {exc}"
                ) from exc
            if is_credentials_error(exc):
                raise ServiceUnavailable(
                    f"{SERVICE}: this worker has no usable credentials for "
                    f"{self.config.backend}: {exc}"
                ) from exc
            raise

    def _draft(self, response: Any) -> LessonDraft:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and feedback.block_reason is not None:
            reason = _enum_name(feedback.block_reason)
            detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise PermanentFailure(f"{SERVICE} refused the prompt ({reason}){detail}")
        candidates = response.candidates or []
        if not candidates:
            raise InvalidAnswer("the answer held no candidate")
        finish = _enum_name(candidates[0].finish_reason)
        if finish in BLOCKED_FINISH_REASONS:
            raise PermanentFailure(f"{SERVICE} withheld its answer (finish reason {finish})")
        if finish == "MAX_TOKENS":
            raise InvalidAnswer(
                f"the answer was cut at {self.config.max_output_tokens} output tokens "
                "(CONTENT_MODEL_MAX_OUTPUT_TOKENS)"
            )
        text = response.text or ""
        try:
            return LessonDraft.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidAnswer(_validation_reason(exc, text)) from exc


def make_client(config: GeminiConfig) -> Any:
    from google import genai  # noqa: PLC0415 - 1 s to import: only when chosen
    from google.genai import types  # noqa: PLC0415

    options = types.HttpOptions(
        base_url=config.base_url, timeout=round(config.timeout_seconds * 1000),
        # Retries are the task's, through Celery, honouring Retry-After: none in the SDK.
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    if config.api_key:
        return genai.Client(api_key=config.api_key, http_options=options)
    return genai.Client(
        vertexai=True, project=config.project, location=config.location, http_options=options
    )


def usage_of(response: Any, model: str) -> ModelUsage:
    metadata = getattr(response, "usage_metadata", None)

    def count(name: str) -> int:
        return int(getattr(metadata, name, None) or 0)

    return ModelUsage(
        model=getattr(response, "model_version", None) or model,
        prompt_tokens=count("prompt_token_count"),
        # Thinking tokens are billed as output.
        output_tokens=count("candidates_token_count") + count("thoughts_token_count"),
    )


def api_error(exc: Any, config: GeminiConfig) -> Exception:
    """A google-genai ``APIError`` as the content domain's error."""
    code = int(exc.code or 0)
    what = f"{SERVICE} answered {code} {exc.status or ''}".rstrip()
    message = f"{what}: {exc.message or exc.details}"
    if code in {408, 429} or code >= 500:
        return ServiceUnavailable(message, retry_after_seconds=retry_after_seconds(exc))
    if code in CONFIGURATION_STATUSES:
        hint = (f"; the worker's service account needs {VERTEX_ROLE}" if code == 403
                and not config.api_key else "")
        return ServiceUnavailable(
            f"{message} ({CONFIGURATION_STATUSES[code]} of this worker: model "
            f"{config.model!r} on {config.backend}{hint})"
        )
    return PermanentFailure(message)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def retry_after_seconds(exc: Any, now: float | None = None) -> float | None:
    """The wait a rate-limited answer asked for: the ``Retry-After`` header (seconds or an
    HTTP date), else a ``google.rpc.RetryInfo`` ``retryDelay`` in the error body."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    if value:
        value = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        return max(0.0, when - (time.time() if now is None else now))
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else {}
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def is_connection_error(exc: BaseException) -> bool:
    """A timeout or a connection failure of the SDK's HTTP client (httpx, httpx2 or aiohttp:
    the SDK may use any, so they are recognised by their module rather than imported)."""
    module = type(exc).__module__.partition(".")[0]
    if module not in ("httpx", "httpx2", "aiohttp"):
        return isinstance(exc, (TimeoutError, ConnectionError))
    return any(k.__name__ in ("TransportError", "ClientConnectionError", "TimeoutException")
               for k in type(exc).__mro__)


def is_credentials_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("google.auth")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "name", value) or "")


def _validation_reason(exc: ValidationError, text: str) -> str:
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return f"not JSON ({errors[0]['msg']}; {len(text)} characters)"
    shown = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'answer'}: {error['msg']}"
        for error in errors[:3]
    )
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"breaks the lesson schema: {shown}{more}"

