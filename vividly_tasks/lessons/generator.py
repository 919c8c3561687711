"""Lesson generators: the interface, and the offline default that needs no network.

``LessonGenerator.generate(spec)`` returns a ``Lesson``. The offline generator writes a complete
lesson from the topic, subject and grade band (objectives, explanation, worked example, a quiz
with answers), worded for the reader's age; it is deterministic, so a rerun produces the same
artifacts. The hosted-model generator (``gemini``) implements the same protocol and reports the
tokens of each call with ``report_usage`` as they are spent (so a call that is paid for and then
fails still counts), to whoever listens with ``usage_reported_to`` (the pipeline).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from vividly_tasks.lessons.lesson import Lesson, QuizItem, Section, as_sentence
from vividly_tasks.lessons.validation import GradeBand, LessonSpec


@dataclass(frozen=True)
class ModelUsage:
    """Tokens spent on a hosted model, and the model that answered last: one call's
    (``calls`` 1), or a request's over several calls and attempts (added up with ``+``)."""

    model: str
    prompt_tokens: int
    output_tokens: int
    calls: int = 1

    def __add__(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            model=other.model or self.model,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            calls=self.calls + other.calls,
        )


#: What a request that never called a model has spent.
NO_USAGE = ModelUsage(model="", prompt_tokens=0, output_tokens=0, calls=0)


UsageSink = Callable[[ModelUsage], None]
#: Where ``report_usage`` goes in this context (a context variable, so the generator protocol
#: stays ``generate(spec)`` and generators written for it keep working).
_usage_sink: ContextVar[UsageSink | None] = ContextVar("usage_sink", default=None)


def report_usage(usage: ModelUsage) -> None:
    """Called by a generator after each call to a hosted model."""
    sink = _usage_sink.get()
    if sink is not None:
        sink(usage)


@contextmanager
def usage_reported_to(sink: UsageSink) -> Iterator[None]:
    token = _usage_sink.set(sink)
    try:
        yield
    finally:
        _usage_sink.reset(token)


class LessonGenerator(Protocol):
    """Writes a lesson for a validated request. Must not keep state between calls; may raise
    ``TransientError`` when a backing service is unavailable and ``PermanentFailure`` when its
    answer can never do; calls ``report_usage`` after each paid call."""

    name: str

    def generate(self, spec: LessonSpec) -> Lesson: ...


@dataclass(frozen=True)
class _Voice:
    """How the offline generator talks to one grade band."""

    intro: str
    idea: str
    parts: str
    why: str
    check: str
    definition: str


VOICES: dict[GradeBand, _Voice] = {
    GradeBand.EARLY: _Voice(
        intro="Today we are going to learn about {topic}. We will look, talk and try it out.",
        idea="{topic} is something we can notice around us. We can look at it closely, "
        "say what we see, and ask questions about it.",
        parts="Big ideas are easier when we look at one small part at a time.",
        why="Learning about {topic} helps us understand the world and share what we know.",
        check="When we finish, we check our idea again to make sure it makes sense.",
        definition="something we can notice, describe and ask questions about",
    ),
    GradeBand.ELEMENTARY: _Voice(
        intro="In this lesson you will explore {topic} in {subject} and practise using it.",
        idea="{topic} is an important idea in {subject}. To understand it, we describe what it "
        "is, look at the parts it is made of, and see how those parts work together.",
        parts="Breaking {topic} into smaller parts makes each part easier to understand.",
        why="Knowing about {topic} helps you explain things you see every day and solve new "
        "problems.",
        check="Good learners always check an answer by asking whether it makes sense.",
        definition="an important idea in {subject} that we understand through its parts and "
        "how they work together",
    ),
    GradeBand.MIDDLE: _Voice(
        intro="This lesson introduces {topic} in {subject}, explains how it works and applies "
        "it to an example.",
        idea="{topic} is a core idea in {subject}. We start from a clear definition, identify "
        "its key components, and then trace how those components interact to produce what "
        "we observe.",
        parts="Complex ideas become manageable when we separate them into components and "
        "study the relationships between them.",
        why="{topic} connects to many other topics in {subject}, so understanding it well "
        "makes later lessons easier.",
        check="Every result should be checked against the definition and the known facts.",
        definition="a core idea in {subject}, made of key components that interact to "
        "produce what we observe",
    ),
    GradeBand.HIGH: _Voice(
        intro="This lesson develops a working understanding of {topic} in {subject}: the "
        "definition, the underlying mechanism, and how to apply it with care.",
        idea="{topic} can be analysed by stating a precise definition, identifying the "
        "variables or components involved, and reasoning about how they depend on one another.",
        parts="A model of {topic} is only as good as its assumptions, so we state them "
        "explicitly and test them against evidence.",
        why="{topic} underpins more advanced work in {subject}, and the same method of analysis "
        "transfers to unfamiliar problems.",
        check="A careful analyst verifies a result, estimates its reasonableness, and notes "
        "the limits of the model used.",
        definition="a concept in {subject} defined by its components and the way they depend "
        "on one another",
    ),
}


class OfflineGenerator:
    """The default generator: a complete, grade-appropriate lesson, with no network."""

    name = "offline"

    def generate(self, spec: LessonSpec) -> Lesson:
        voice = VOICES[spec.band]
        topic, subject = spec.topic, spec.subject

        def say(text: str) -> str:
            return text.format(topic=topic, subject=subject)

        objectives = (
            f"Explain what {topic} is in your own words.",
            f"Name the key parts of {topic} and how they fit together.",
            f"Use {topic} to work through an example and check the result.",
        )
        steps = (
            f"Read the question carefully and write down what it asks about {topic}.",
            f"List what you already know about {topic} that could help.",
            "Apply the main idea one step at a time, writing down each step.",
            "Check the answer: does it fit the definition and the facts you listed?",
        )
        quiz = (
            QuizItem(
                question=f"In one sentence, what is {topic}?",
                answer=f"{topic} is {say(voice.definition)}.",
            ),
            QuizItem(
                question=f"True or false: {topic} is easier to understand when broken into "
                "smaller parts.",
                answer=f"True. {say(voice.parts)}",
            ),
            QuizItem(
                question="Which step of the worked example makes sure the answer is right?",
                answer=f"Step {len(steps)}: {steps[-1]}",
            ),
        )
        sections = (
            Section(
                heading="What you will learn",
                paragraphs=(say(voice.intro),),
                items=objectives,
                narration=f"{as_sentence(topic)} {say(voice.intro)}",
            ),
            Section(
                heading="Key ideas",
                paragraphs=(say(voice.idea), say(voice.parts), say(voice.why)),
                narration=f"{say(voice.idea)} {say(voice.why)}",
            ),
            Section(
                heading="Worked example",
                paragraphs=(f"Let us apply {topic} to a question, step by step.",),
                items=steps,
                ordered=True,
                narration=f"Here is a worked example about {topic}, in {len(steps)} steps. "
                f"{say(voice.check)}",
            ),
            Section(
                heading="Quiz",
                items=tuple(item.question for item in quiz),
                ordered=True,
                narration=f"Now a short quiz with {len(quiz)} questions. Pause and answer them.",
            ),
            Section(
                heading="Answers",
                items=tuple(item.answer for item in quiz),
                ordered=True,
                narration=f"Here are the answers. Well done for learning about {topic}.",
            ),
        )
        return Lesson(
            title=f"{topic}: a {subject} lesson",
            topic=topic,
            subject=subject,
            grade_label=spec.grade_label,
            objectives=objectives,
            sections=sections,
            quiz=quiz,
        )
