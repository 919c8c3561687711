"""Service mode's HTTP listener: liveness (``/healthz``) and readiness (``/readyz``).

Two bootsteps share one ``HealthState``: a consumer step that says whether the task consumer
is running (Celery stops and restarts the consumer's steps around a lost connection, so the
flag follows reconnections), and a worker step that serves HTTP from a thread. Readiness
also needs the broker to answer a fresh connection, probed in the background at most every
``PROBE_INTERVAL_SECONDS``, so a dead broker shows before Celery's own retry notices.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 1.0
#: A probe older than this is no evidence that the broker is reachable now.
PROBE_MAX_AGE_SECONDS = 5.0


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

    def report(self) -> dict[str, Any]:
        return {
            "consuming": self.consuming,
            "stopping": self.stopping,
            "broker_reachable": self.broker_reachable(),
            "broker_error": self.broker_error,
            "broker_probe_age_seconds": round(time.monotonic() - self.probed_at, 1),
        }


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
        self._server: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()
        super().__init__(w, **kwargs)

    def start(self, w: Any) -> None:
        assert self.config is not None and self.state is not None
        self._server = ThreadingHTTPServer(
            (self.config.host, self.config.port), make_handler(self.state)
        )
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="vividly-health",
                         daemon=True).start()
        threading.Thread(target=self._probe_loop, name="vividly-broker-probe",
                         daemon=True).start()
        logger.info("health server listening on %s:%d", self.config.host, self.config.port)

    def stop(self, w: Any) -> None:
        # Readiness goes down first, so a load balancer stops routing while tasks finish.
        if self.state is not None:
            self.state.stopping = True
        self._stopped.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def shutdown(self, w: Any) -> None:
        self.stop(w)

    def _probe_loop(self) -> None:
        assert self.config is not None and self.state is not None
        while not self._stopped.is_set():
            try:
                self.config.probe_broker()
            except Exception as exc:  # any failure means "not reachable"; say which
                self.state.broker_ok, self.state.broker_error = False, repr(exc)
            else:
                self.state.broker_ok, self.state.broker_error = True, None
            self.state.probed_at = time.monotonic()
            self._stopped.wait(PROBE_INTERVAL_SECONDS)


def make_handler(state: HealthState) -> type[BaseHTTPRequestHandler]:
    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                # Alive while the worker has not begun to stop: a broker outage is handled by
                # Celery's reconnection, and restarting the container would not help it.
                ok = not state.stopping
            elif self.path == "/readyz":
                ok = state.ready()
            else:
                self.send_error(404)
                return
            body = json.dumps({"status": "ok" if ok else "unavailable", **state.report()})
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: Any) -> None:
            # Probes every few seconds would drown the worker's own logs.
            return

    return HealthHandler
