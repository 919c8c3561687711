"""Tracing, the opt-in worker piece: ``configure(app)`` (docs/tracing.md).

One call sets up OpenTelemetry for the producer and the worker of ``app``: the SDK's tracer
provider (``otel_sdk.py``: one per process, so each prefork child exports on its own, built
at ``worker_process_init`` and flushed at ``worker_process_shutdown``, which runs at every
stop), Celery's own instrumentation (opentelemetry-instrumentation-celery: ``apply_async``
and ``run`` spans), the transport's messaging spans (``vividly_tasks.transport.tracing``) and
the app's own (``vividly_tasks.spans``: the lesson stages), and the trace fields of the JSON
log lines (``logs.py``). Exporters come from ``OTEL_TRACES_EXPORTER`` (OTLP by default,
configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables) unless given; the service
name from ``OTEL_SERVICE_NAME`` or the app's name; sampling from ``OTEL_TRACES_SAMPLER``.

The ``vividly-worker`` entrypoint and the ``vividly`` CLI call ``configure_if_requested``:
tracing is on when ``OTEL_TRACES_EXPORTER`` is set to anything but ``none`` (and
``OTEL_SDK_DISABLED`` is not ``true``).

Importing this module loads nothing of OpenTelemetry, and neither does the rest of the
adapter unless ``configure`` is called: the OpenTelemetry packages are the ``tracing`` extra
(``pip install 'vividly-tasks[tracing]'``), and without it ``configure`` raises an
ImportError that names it. ``unconfigure()`` switches the pieces off again (OpenTelemetry
keeps its global tracer provider: it cannot be unset).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown

from vividly_tasks import spans
from vividly_tasks.extras import require_extra
from vividly_tasks.transport import tracing as transport_tracing

logger = logging.getLogger(__name__)

#: How long a prefork child's exit waits for its spans to be exported (within the shutdown
#: grace that ``attach`` gives the child's hooks).
CHILD_FLUSH_TIMEOUT_MILLIS = 5_000
TRUE_STRINGS = frozenset({"1", "true", "yes", "on"})
#: What the ``tracing`` extra installs, by the module each package is imported as.
EXTRA_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.grpc",
                 "opentelemetry.instrumentation.celery")

_configured: dict[str, Any] = {}


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for tracing: ``OTEL_TRACES_EXPORTER`` set, not ``none``."""
    env = os.environ if environ is None else environ
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() in TRUE_STRINGS:
        return False
    names = [n.strip() for n in (env.get("OTEL_TRACES_EXPORTER") or "").split(",")]
    return any(name and name != "none" for name in names)


def configure_if_requested(app: Any) -> bool:
    """``configure(app)`` if the environment asks for tracing (``requested``)."""
    if not requested():
        return False
    configure(app)
    return True


def configure(
    app: Any = None,
    *,
    exporters: Sequence[Callable[[], Any]] | None = None,
    service_name: str | None = None,
    project: str | None = None,
    tracer_provider: Any = None,
    instrument_celery: bool = True,
) -> Any:
    """Trace ``app``'s producers and workers; returns the tracer provider in use.

    ``exporters``: factories of span exporters, called once per process (a prefork child
    builds its own); by default those ``OTEL_TRACES_EXPORTER`` names (OTLP over gRPC).
    ``project``: the Google Cloud project of the log lines' trace field (by default the
    ``pubsub://PROJECT`` broker's, or ``GOOGLE_CLOUD_PROJECT``). ``tracer_provider``: use
    this one instead (its owner makes it fork-safe and flushes it); otherwise the SDK's
    global provider if one is set already, else one made here and set globally.
    Calling it again reconfigures the pieces; the global provider stays the first one.
    """
    require_extra("tracing", "tracing", EXTRA_MODULES)
    from opentelemetry import trace  # noqa: PLC0415 - the extra's, only when asked for

    from vividly_tasks.worker import otel_sdk  # noqa: PLC0415

    unconfigure()
    provider = tracer_provider
    if provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, trace.ProxyTracerProvider):
            provider = otel_sdk.ProcessTracerProvider(
                exporters if exporters is not None else otel_sdk.exporters_from_environment(),
                _resource(app, service_name),
            )
            trace.set_tracer_provider(provider)
        else:
            provider = current
            if exporters is not None and not isinstance(current,
                                                        otel_sdk.ProcessTracerProvider):
                logger.warning("a tracer provider is set already: the exporters given to "
                               "configure() are not used")
    transport_tracing.instrument(provider)
    spans.enable(provider, project=project or _project_of(app))
    if instrument_celery:
        _instrument_celery(provider)
    _configured.update(provider=provider, celery=instrument_celery)
    worker_process_init.connect(_on_child_start, weak=False)
    worker_process_shutdown.connect(_on_child_exit, weak=False)
    worker_shutdown.connect(_on_worker_exit, weak=False)
    return provider


def unconfigure() -> None:
    """Switch the transport's, the app's and Celery's spans off again."""
    worker_process_init.disconnect(_on_child_start)
    worker_process_shutdown.disconnect(_on_child_exit)
    worker_shutdown.disconnect(_on_worker_exit)
    transport_tracing.uninstrument()
    spans.disable()
    if _configured.pop("celery", False):
        from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

        CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    _configured.clear()


def is_configured() -> bool:
    return bool(_configured)


def _instrument_celery(provider: Any) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor  # noqa: PLC0415

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def _resource(app: Any, service_name: str | None) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415

    attributes: dict[str, str] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service_name or str(getattr(app, "main", None) or "celery")
    return Resource.create(attributes)  # adds OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES


def _project_of(app: Any) -> str | None:
    """The project of a ``pubsub://PROJECT`` broker, else ``GOOGLE_CLOUD_PROJECT``."""
    url = ""
    if app is not None:
        try:
            url = str(app.conf.broker_url or "")
        except Exception:  # a lazily configured app that cannot resolve yet: no project
            url = ""
    parsed = urlparse(url)
    if parsed.scheme == "pubsub" and parsed.hostname and parsed.hostname != "localhost":
        return parsed.hostname
    return os.environ.get("GOOGLE_CLOUD_PROJECT") or None


def _on_child_start(**_: Any) -> None:
    """A prefork child builds its own provider and exporters now, not in its first task."""
    provider = _configured.get("provider")
    if provider is not None and hasattr(provider, "for_this_process"):
        provider.for_this_process()


def _on_child_exit(**_: Any) -> None:
    """A prefork child's exit: export what it recorded (its atexit handlers never run)."""
    provider = _configured.get("provider")
    if provider is None:
        return
    try:
        if hasattr(provider, "shutdown_this_process"):
            provider.shutdown_this_process()
        elif hasattr(provider, "force_flush"):
            provider.force_flush(CHILD_FLUSH_TIMEOUT_MILLIS)
    except Exception:  # a failed export must not stop the child's other hooks
        logger.exception("flushing this process's spans failed")


def _on_worker_exit(**_: Any) -> None:
    """The worker's own spans (receipts, settlements) are exported before it exits."""
    provider = _configured.get("provider")
    if provider is not None and hasattr(provider, "force_flush"):
        try:
            provider.force_flush(CHILD_FLUSH_TIMEOUT_MILLIS)
        except Exception:
            logger.exception("flushing the worker's spans failed")
