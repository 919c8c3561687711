"""The hosted-model generator: the real google-genai SDK against a server on
loopback that speaks ``generateContent`` (harness/fakes/gemini.py), answering from a script."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from email.utils import formatdate
from types import SimpleNamespace

import pytest

from harness.fakes.gemini import MODEL_VERSION, FakeGemini, lesson_answer
from vividly_tasks.lessons.errors import PermanentFailure, ServiceUnavailable, TransientError
from vividly_tasks.lessons.gemini import (
    GeminiConfig,
    GeminiGenerator,
    LessonDraft,
    lesson_from_draft,
    retry_after_seconds,
)
from vividly_tasks.lessons.generator import ModelUsage, OfflineGenerator, usage_reported_to
from vividly_tasks.lessons.services import make_generator, missing_configuration
from vividly_tasks.lessons.settings import Settings
from vividly_tasks.lessons.tasks import transient_countdown
from vividly_tasks.lessons.validation import LessonSpec, Modality

TOPIC = "Photosynthesis"


@pytest.fixture
def server() -> Iterator[FakeGemini]:
    with FakeGemini.running() as fake:
        yield fake


def generator(server: FakeGemini, **options: object) -> GeminiGenerator:
    config = GeminiConfig(api_key="test-key", base_url=server.base_url, timeout_seconds=5,
                          model="gemini-2.5-flash")
    return GeminiGenerator(config.__class__(**{**config.__dict__, **options}))


def spec(topic: str = TOPIC, grade: int | None = 4,
         modality: Modality = Modality.TEXT) -> LessonSpec:
    return LessonSpec(topic=topic, subject="Biology", grade=grade, modality=modality)


def test_the_lesson_is_built_from_the_models_structured_answer(server: FakeGemini) -> None:
    spent: list[ModelUsage] = []
    with usage_reported_to(spent.append):
        lesson = generator(server).generate(spec())

    headings = [section.heading for section in lesson.sections]
    assert headings[0] == "What you will learn"
    assert headings[1:4] == [f"Server section {n}: {TOPIC}" for n in (1, 2, 3)]
    assert headings[4:] == ["Worked example", "Quiz", "Answers"]
    assert lesson.title == f"{TOPIC}, as the model tells it"
    assert len(lesson.quiz) == 3 and lesson.quiz[0].answer == "What the definition says."

    (call,) = server.calls
    assert re.fullmatch(r"/v1(beta)?/models/gemini-2\.5-flash:generateContent", call.path)
    assert call.headers.get("x-goog-api-key") == "test-key"
    generation = call.body["generationConfig"]
    assert generation["responseMimeType"] == "application/json"
    assert {"sections", "quiz", "worked_example", "objectives"} <= set(
        generation["responseJsonSchema"]["properties"])
    assert generation["temperature"] == 0.4
    assert f"Write a lesson about: {TOPIC}" in call.prompt
    assert "Grade 4 (grade band: elementary)" in call.prompt
    assert "grades 3 to 5" in call.prompt
    assert spent == [ModelUsage(MODEL_VERSION, spent[0].prompt_tokens, spent[0].output_tokens)]
    assert spent[0].prompt_tokens > 100 and spent[0].output_tokens > 100


def test_the_prompt_is_worded_for_the_grade_band(server: FakeGemini) -> None:
    for grade in (1, 11):
        generator(server).generate(spec(grade=grade, modality=Modality.VIDEO))
    early, high = (call.prompt for call in server.calls)
    assert "kindergarten to grade 2" in early and "grades 9 to 12" not in early
    assert "grades 9 to 12" in high and "(grade band: high)" in high
    assert "narrated video" in high


def test_the_prompt_asks_for_as_many_items_as_the_schema_it_sends_accepts(
    server: FakeGemini,
) -> None:
    generator(server).generate(spec())
    (call,) = server.calls
    schema = call.body["generationConfig"]["responseJsonSchema"]["properties"]
    words = dict(enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven",
                            "eight")))
    for field, asked in (("objectives", "learning objectives"), ("sections", "sections"),
                         ("quiz", "questions")):
        low, high = schema[field]["minItems"], schema[field]["maxItems"]
        assert f"{words[low]} to {words[high]} {asked}" in call.prompt, (field, low, high)


def test_the_sdk_logs_nothing_at_info_on_each_call(
    server: FakeGemini, caplog: pytest.LogCaptureFixture,
) -> None:
    """Automatic function calling is off (no tools are sent): the SDK's "AFC is enabled"
    line, once at INFO on every call, is gone."""
    with caplog.at_level(logging.DEBUG, logger="google_genai"):
        generator(server).generate(spec())
        generator(server).generate(spec())
    assert len(server.calls) == 2
    sdk_lines = [r for r in caplog.records if r.name.startswith("google_genai")]
    assert not [r.getMessage() for r in sdk_lines if "AFC" in r.getMessage()]
    assert not [r.getMessage() for r in sdk_lines if r.levelno >= logging.INFO]


def test_a_title_that_ends_a_sentence_gets_no_second_full_stop() -> None:
    draft = LessonDraft.model_validate(
        {**lesson_answer("Energy"), "title": "Kinetic and potential energy."})
    lesson = lesson_from_draft(draft, spec("Energy"))
    assert lesson.sections[0].narration.startswith(
        "Kinetic and potential energy. Welcome.")
    untidy = LessonDraft.model_validate({**lesson_answer("Energy"), "title": "Energy"})
    assert lesson_from_draft(untidy, spec("Energy")).sections[0].narration.startswith(
        "Energy. Welcome.")
    offline = OfflineGenerator().generate(spec("What is energy?"))
    assert offline.sections[0].narration.startswith("What is energy? ")
    assert ".." not in OfflineGenerator().generate(spec("Energy.")).sections[0].narration


def test_a_rate_limit_is_transient_and_carries_retry_after(server: FakeGemini) -> None:
    server.script(TOPIC, "rate_limited:7")
    with pytest.raises(ServiceUnavailable, match="429 RESOURCE_EXHAUSTED") as raised:
        generator(server).generate(spec())
    assert raised.value.retry_after_seconds == 7.0


@pytest.mark.parametrize("answer", ["unavailable", "forbidden"])
def test_an_unavailable_or_refusing_service_is_transient(
    server: FakeGemini, answer: str
) -> None:
    server.script(TOPIC, answer)
    with pytest.raises(ServiceUnavailable) as raised:
        generator(server).generate(spec())
    assert raised.value.retry_after_seconds is None
    assert len(server.calls) == 1  # no retries inside the SDK: they are Celery's


def test_a_403_on_vertex_ai_names_the_role() -> None:
    from vividly_tasks.lessons.gemini import api_error

    exc = SimpleNamespace(code=403, status="PERMISSION_DENIED", message="denied", details=None)
    error = api_error(exc, GeminiConfig(project="p"))
    assert isinstance(error, ServiceUnavailable)
    assert "roles/aiplatform.user" in str(error) and "Vertex AI (p, global)" in str(error)


def test_a_call_that_times_out_is_transient(server: FakeGemini) -> None:
    server.script(TOPIC, "hang:3")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="did not answer"):
        generator(server, timeout_seconds=1.0).generate(spec())
    assert time.monotonic() - started < 2.5


def test_a_malformed_answer_is_asked_again_then_fails_with_the_reason(
    server: FakeGemini,
) -> None:
    server.script(TOPIC, "malformed")
    spent: list[ModelUsage] = []
    with (pytest.raises(PermanentFailure, match=r"no valid lesson in 2 calls: not JSON"),
          usage_reported_to(spent.append)):
        generator(server).generate(spec())
    first, second = server.calls
    assert "rejected" not in first.prompt
    assert "Your previous answer was rejected (not JSON" in second.prompt
    assert len(spent) == 2  # paid for, though useless


def test_a_malformed_answer_then_a_good_one_makes_the_lesson(server: FakeGemini) -> None:
    server.script(TOPIC, "malformed", "lesson")
    lesson = generator(server).generate(spec())
    assert lesson.sections[1].heading.startswith("Server section 1")
    assert len(server.calls) == 2


def test_an_answer_that_breaks_the_schema_fails_naming_the_field(server: FakeGemini) -> None:
    server.script(TOPIC, "off_schema")
    with pytest.raises(PermanentFailure, match=r"breaks the lesson schema: quiz: Field required"):
        generator(server, attempts=1).generate(spec())


@pytest.mark.parametrize(("answer", "reason"), [
    ("blocked", r"refused the prompt \(SAFETY\)"),
    ("withheld", r"withheld its answer \(finish reason SAFETY\)"),
])
def test_a_safety_block_fails_at_once_with_the_reason(
    server: FakeGemini, answer: str, reason: str
) -> None:
    server.script(TOPIC, answer)
    with pytest.raises(PermanentFailure, match=reason):
        generator(server).generate(spec())
    assert len(server.calls) == 1


def test_retry_after_is_read_as_seconds_an_http_date_or_a_retry_info() -> None:
    def error(headers: dict[str, str], details: object = None) -> SimpleNamespace:
        return SimpleNamespace(response=SimpleNamespace(headers=headers), details=details)

    now = time.time()
    assert retry_after_seconds(error({"retry-after": "12"})) == 12.0
    dated = retry_after_seconds(error({"retry-after": formatdate(now + 30, usegmt=True)}), now)
    assert dated is not None and 28 <= dated <= 31
    info = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                   "retryDelay": "37s"}]}}
    assert retry_after_seconds(error({}, info)) == 37.0
    assert retry_after_seconds(error({})) is None


def test_a_retry_waits_at_least_retry_after_within_the_longest_backoff() -> None:
    settings = Settings(CONTENT_RETRY_BACKOFF_SECONDS=1, CONTENT_RETRY_BACKOFF_MAX_SECONDS=60)
    asked = ServiceUnavailable("429", retry_after_seconds=20)
    assert all(transient_countdown(settings, 0, asked) >= 20 for _ in range(20))
    too_long = ServiceUnavailable("429", retry_after_seconds=3600)
    assert transient_countdown(settings, 0, too_long) == 60
    plain = TransientError("database busy")
    assert all(1 <= transient_countdown(settings, 0, plain) <= 1.0 + 1 for _ in range(20))


def test_settings_choose_the_generator_and_what_it_needs_is_checked() -> None:
    assert make_generator(Settings()).name == "offline"
    chosen = make_generator(Settings(CONTENT_GENERATOR="gemini", GEMINI_API_KEY="k",
                                     CONTENT_MODEL="gemini-x"))
    assert isinstance(chosen, GeminiGenerator)
    assert chosen.config.api_key == "k" and chosen.config.model == "gemini-x"
    assert missing_configuration(Settings(CONTENT_GENERATOR="gemini", GEMINI_API_KEY="k")) == []
    vertex = make_generator(Settings(CONTENT_GENERATOR="gemini",
                                     BROKER_URL="pubsub://lessons-prod"))
    assert isinstance(vertex, GeminiGenerator) and vertex.config.project == "lessons-prod"
    assert "Vertex AI" in vertex.config.backend


def test_vertex_ai_without_a_project_or_credentials_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object,
) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    missing = missing_configuration(Settings(CONTENT_GENERATOR="gemini"))
    assert len(missing) == 2
    assert missing[0].startswith("GOOGLE_CLOUD_PROJECT (the Vertex AI project")
    assert missing[1].startswith("Application Default Credentials for Vertex AI")
    assert "/nonexistent/key.json" in missing[1]


def test_an_empty_key_or_project_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")  # no probing
    settings = Settings(GEMINI_API_KEY="", GOOGLE_CLOUD_PROJECT=" ", CONTENT_GENERATOR="gemini")
    assert settings.gemini_api_key is None and settings.google_cloud_project is None
    assert "GOOGLE_CLOUD_PROJECT (the Vertex AI project" in missing_configuration(settings)[0]
