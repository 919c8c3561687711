"""Spans of an app's own work (the lesson pipeline's stages, a submit), free while tracing is off.

Nothing here imports OpenTelemetry: ``enable`` (called by ``vividly_tasks.worker.tracing``)
hands over a tracer, and until then every function returns after one check. The content
domain uses it without knowing whether tracing is on:

* ``span(name, **attributes)``: a span around a block, the current span its parent;
* ``staged`` (a decorator) and ``stage(name, **attributes)``: a function whose stages follow
  one another, each stage a span that lasts until the next ``stage`` call or the function's
  end (an exception ends the current one as an error);
* ``annotate(**attributes)``, ``add_usage(...)``: attributes on the current span, and a hosted
  model's name and tokens added up on it (OpenTelemetry's ``gen_ai.*`` names);
* ``trace_log_fields()``: Cloud Logging's trace fields for the current span (``logs.py``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The tracer of this process, or None: tracing is off.
_tracer: Any = None
#: ``projects/PROJECT/traces/`` for Cloud Logging's trace field ("" when the project is unknown).
_trace_prefix = ""

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
MODEL_CALLS = "vividly.model_calls"


def enable(tracer_provider: Any = None, *, project: str | None = None) -> None:
    """Record spans with ``tracer_provider`` (the global one if None); ``project`` names the
    Google Cloud project in the log lines' trace field."""
    global _tracer, _trace_prefix  # noqa: PLW0603 - the switch, process-wide as OpenTelemetry's
    from opentelemetry import trace  # noqa: PLC0415 - only once tracing is asked for

    _tracer = trace.get_tracer("vividly_tasks", tracer_provider=tracer_provider)
    _trace_prefix = f"projects/{project}/traces/" if project else ""


def disable() -> None:
    global _tracer  # noqa: PLW0603
    _tracer = None


def is_enabled() -> bool:
    return _tracer is not None


def _attributes(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments as span attributes, ``None`` left out (dotted names through
    ``**{"a.b": 1}``)."""
    return {k: v if isinstance(v, str | bool | int | float) else str(v)
            for k, v in values.items() if v is not None}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span around the block (a child of the current span); an exception marks it failed."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, attributes=_attributes(attributes)):
        yield


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span (a stage's, inside one)."""
    if _tracer is None:
        return
    from opentelemetry import trace  # noqa: PLC0415 - loaded already, tracing is on

    trace.get_current_span().set_attributes(_attributes(attributes))


@dataclass
class _Stages:
    """The stage spans of one ``staged`` call: the current one and its context token."""

    current: Any = None
    token: Any = None
    usage: dict[str, Any] = field(default_factory=dict)

    def next(self, name: str, attributes: dict[str, Any]) -> None:
        from opentelemetry import context, trace  # noqa: PLC0415

        self.end()
        self.current = _tracer.start_span(name, attributes=_attributes(attributes))
        self.token = context.attach(trace.set_span_in_context(self.current))
        self.usage = {}

    def fail(self, error: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        if self.current is not None:
            self.current.record_exception(error)
            self.current.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def end(self) -> None:
        from opentelemetry import context  # noqa: PLC0415

        if self.token is not None:
            context.detach(self.token)
        if self.current is not None:
            self.current.end()
        self.current = self.token = None


_stages: ContextVar[_Stages | None] = ContextVar("vividly_stage_spans", default=None)


def staged(function: F) -> F:
    """Let ``function`` mark its stages with ``stage``: each a span until the next."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _tracer is None:
            return function(*args, **kwargs)
        stages = _Stages()
        token = _stages.set(stages)
        try:
            return function(*args, **kwargs)
        except BaseException as exc:
            stages.fail(exc)
            raise
        finally:
            stages.end()
            _stages.reset(token)

    return wrapper  # type: ignore[return-value]


def stage(name: str, **attributes: Any) -> None:
    """End the current stage's span of the enclosing ``staged`` call and start ``name``'s."""
    if _tracer is None:
        return
    stages = _stages.get()
    if stages is not None:
        stages.next(name, attributes)


def add_usage(*, model: str, prompt_tokens: int, output_tokens: int, calls: int = 1) -> None:
    """A hosted model's call on the current stage's span: model name and tokens, added up."""
    if _tracer is None:
        return
    stages = _stages.get()
    if stages is None or stages.current is None:
        return
    usage = stages.usage
    usage[INPUT_TOKENS] = usage.get(INPUT_TOKENS, 0) + prompt_tokens
    usage[OUTPUT_TOKENS] = usage.get(OUTPUT_TOKENS, 0) + output_tokens
    usage[MODEL_CALLS] = usage.get(MODEL_CALLS, 0) + calls
    if model:
        usage[MODEL] = model
    stages.current.set_attributes(usage)


def trace_log_fields() -> dict[str, Any] | None:
    """Cloud Logging's ``trace``, ``spanId`` and ``trace_sampled`` fields of the current span;
    None when tracing is off or no span is active."""
    if _tracer is None:
        return None
    from opentelemetry import trace  # noqa: PLC0415

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {
        TRACE_FIELD: f"{_trace_prefix}{context.trace_id:032x}",
        SPAN_FIELD: f"{context.span_id:016x}",
        SAMPLED_FIELD: context.trace_flags.sampled,
    }
