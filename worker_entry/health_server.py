"""Service mode's HTTP listener: liveness (``/healthz``) and readiness (``/readyz``).

Two bootsteps share one ``HealthState``: a consumer step that says whether the task consumer
is running (Celery stops and restarts the consumer's steps around a lost connection, so the
flag follows reconnections), and a worker step that serves HTTP from a thread. Readiness
also needs the broker to answer a fresh connection, probed in the background at most every
``PROBE_INTERVAL_SECONDS``, so a dead broker shows before Celery's own retry notices.

The listener faces whatever network ``WORKER_HEALTH_HOST`` opens it to, so it runs on
``vividly_tasks.http_server`` (waitress) within ``HEALTH_LIMITS``: no body, small headers,
two threads, a request deadline. Its answers say what is wrong in a few fixed words
(``"reason": "broker_unreachable"``); why the broker probe failed (an error's text can name
hosts and URLs) goes to the worker's log, once per change, never to the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from celery import bootsteps
from celery.signals import worker_shutdown, worker_shutting_down

from vividly_tasks.http_server import EdgeLimits, EdgeServer, json_response

logger = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 1.0
#: A probe older than this is no evidence that the broker is reachable now.
PROBE_MAX_AGE_SECONDS = 5.0
#: Probes are GETs: no body at all, a few headers, two at a time, and any request arrives
#: whole within 5 s (a probe's own timeout is a few seconds).
HEALTH_LIMITS = EdgeLimits(max_body_bytes=0, max_header_bytes=8 * 1024,
                           request_timeout_seconds=5.0, idle_timeout_seconds=30.0,
                           threads=2, connection_limit=100)


@dataclass(frozen=True)
class HealthConfig:
    host: str
    port: int
    #: Opens and closes one broker connection; raises if the broker does not answer.
    probe_broker: Callable[[], None]


@dataclass
class HealthState:
    consuming: bool = False
    stopping: bool = False
    broker_ok: bool = False
    broker_error: str | None = None
    probed_at: float = field(default=0.0)

    def broker_reachable(self) -> bool:
        """The last probe succeeded, recently: a probe stuck in a dead broker proves nothing."""
        return self.broker_ok and time.monotonic() - self.probed_at < PROBE_MAX_AGE_SECONDS

    def ready(self) -> bool:
        return self.consuming and not self.stopping and self.broker_reachable()

    def reason(self) -> str | None:
        """Why the worker is not ready, in fixed words (the detail is in the log)."""
        if self.stopping:
            return "stopping"
        if not self.broker_reachable():
            return "broker_unreachable"
        if not self.consuming:
            return "not_consuming"
        return None

    def report(self) -> dict[str, Any]:
        return {
            "consuming": self.consuming,
            "stopping": self.stopping,
            "broker_reachable": self.broker_reachable(),
            "broker_probe_age_seconds": round(time.monotonic() - self.probed_at, 1),
        }

    def record_probe(self, error: Exception | None) -> None:
        """Note a probe's outcome; log the error when it differs from the last one."""
        detail = None if error is None else repr(error)
        if detail != self.broker_error:
            if detail is None:
                logger.info("health: the broker answers again")
            else:
                logger.warning("health: the broker does not answer: %s", detail,
                               extra={"event": "broker_probe_failed"})
        self.broker_ok, self.broker_error = error is None, detail
        self.probed_at = time.monotonic()


class ConsumingFlag(bootsteps.StartStopStep):  # type: ignore[misc]
    """Marks the task consumer as running between its start and its stop (or restart)."""

    label = "Consuming flag"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, vividly_health_state: HealthState | None = None,
                 **kwargs: Any) -> None:
        self.state = vividly_health_state
        self.enabled = vividly_health_state is not None
        super().__init__(c, **kwargs)

    def start(self, c: Any) -> None:
        assert self.state is not None
        self.state.consuming = True

    def stop(self, c: Any) -> None:
        assert self.state is not None
        self.state.consuming = False

    def shutdown(self, c: Any) -> None:
        self.stop(c)


class HealthServer(bootsteps.StartStopStep):  # type: ignore[misc]
    """Serves ``/healthz`` and ``/readyz`` on ``$PORT`` while the worker runs."""

    label = "Health server"
    # After the pool: its children are forked before this thread exists. Before the
    # consumer (always last): the port answers while the broker connection is being made,
    # which Cloud Run's start-up probe expects.
    requires = ("celery.worker.components:Pool",)

    def __init__(self, w: Any, vividly_health: HealthConfig | None = None,
                 vividly_health_state: HealthState | None = None, **kwargs: Any) -> None:
        self.config = vividly_health
        self.state = vividly_health_state
        self.enabled = vividly_health is not None and vividly_health_state is not None
        self._server: EdgeServer | None = None
        self._stopped = threading.Event()
        super().__init__(w, **kwargs)

    def start(self, w: Any) -> None:
        assert self.config is not None and self.state is not None
        self._server = EdgeServer(make_app(self.state), host=self.config.host,
                                  port=self.config.port, limits=HEALTH_LIMITS, name="health")
        threading.Thread(target=self._server.serve_forever, name="vividly-health",
                         daemon=True).start()
        threading.Thread(target=self._probe_loop, name="vividly-broker-probe",
                         daemon=True).start()
        if w is not None:  # scoped to this worker: another in the process is not ours
            # Celery sends the first from its SIGTERM/SIGINT handler, before any step stops.
            worker_shutting_down.connect(self.note_stopping, sender=w.hostname, weak=False)
            worker_shutdown.connect(self.close_listener, sender=w, weak=False)
        logger.info("health server listening on %s:%d", self.config.host, self._server.port)

    def stop(self, w: Any) -> None:
        # Both endpoints answer 503 from the stop signal (``note_stopping``) until the drain
        # ends: Celery stops this step before the pool, whose stop is the drain of running
        # tasks, and a port closed during the drain would read as a crash, not a stop. The
        # listener closes at ``worker_shutdown``, which Celery sends once every step stopped.
        self.note_stopping()
        self._stopped.set()

    def shutdown(self, w: Any) -> None:
        self.stop(w)

    def note_stopping(self, **_: Any) -> None:
        """A stop began (Celery's ``worker_shutting_down``, or this step's stop)."""
        if self.state is not None:
            self.state.stopping = True

    def close_listener(self, **_: Any) -> None:
        """Close the listener (Celery's ``worker_shutdown``: the drain is over)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown(timeout_seconds=2)
        worker_shutting_down.disconnect(self.note_stopping)
        worker_shutdown.disconnect(self.close_listener)

    def _probe_loop(self) -> None:
        assert self.config is not None and self.state is not None
        while not self._stopped.is_set():
            try:
                self.config.probe_broker()
            except Exception as exc:  # any failure means "not reachable"; the log says which
                self.state.record_probe(exc)
            else:
                self.state.record_probe(None)
            self._stopped.wait(PROBE_INTERVAL_SECONDS)


def make_app(state: HealthState) -> WSGIApplication:
    """``/healthz`` and ``/readyz`` as a WSGI application; other paths are 404."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return json_response(start_response, 405, {"error": "GET only"},
                                 [("Allow", "GET, HEAD")])
        if path == "/healthz":
            # Alive while the worker has not begun to stop: a broker outage is handled by
            # Celery's reconnection, and restarting the container would not help it.
            ok = not state.stopping
            reason = "stopping" if state.stopping else None
        elif path == "/readyz":
            ok, reason = state.ready(), state.reason()
        else:
            return json_response(start_response, 404, {"error": "not found"})
        status = "ok" if ok else "unavailable"
        body = {"status": status, **({} if ok else {"reason": reason}), **state.report()}
        return json_response(start_response, 200 if ok else 503, body)

    return app
