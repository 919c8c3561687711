"""The dispatcher's HTTP endpoint (``vividly dispatch serve``), a Cloud Run service scaled to
zero in production.

- ``POST /push``: the wake-up push subscription delivers here. The arrival is remembered at
  once; the request then waits ``gather_seconds`` for the rest of a burst, and one decision
  is made for everything that arrived meanwhile (a wake-up whose arrival an earlier decision
  of this process already saw makes none). 204 when done; 400 for a body that is not a push
  delivery (Pub/Sub never sends one); 500 when the decision failed, so Pub/Sub redelivers the
  wake-up later (its retry policy backs off).
- ``POST /check``: a decision without an arrival (the safety-net schedule).
- ``GET /healthz``: 200.

A decision that says when to look again (the window's end, a delayed task coming due) is
also scheduled in the process (``next_check_at``); on Cloud Run, whose CPU is throttled
between requests, the safety-net schedule is what makes sure of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from vividly_tasks.dispatch.arrivals import NotAPushDelivery, arrival_from_push
from vividly_tasks.dispatch.dispatcher import Dispatcher
from vividly_tasks.dispatch.errors import DispatchError

logger = logging.getLogger(__name__)

#: Longest wait of the in-process re-check, so an idle server still looks now and then.
MAX_RECHECK_SECONDS = 600.0


class _Listener(ThreadingHTTPServer):
    # A burst of pushes arrives at once (Cloud Run's default is 80 concurrent requests an
    # instance): the default backlog of 5 connections would reset the rest.
    request_queue_size = 256
    daemon_threads = True


class DispatchServer:
    """Serves the endpoints in threads; ``serve_forever`` until ``shutdown``."""

    def __init__(self, dispatcher: Dispatcher, *, host: str, port: int,
                 gather_seconds: float, check_every_seconds: float | None = None) -> None:
        self.dispatcher = dispatcher
        self.gather_seconds = gather_seconds
        self.check_every_seconds = check_every_seconds
        #: ``time.monotonic()`` when this process's last decision read the record.
        self._last_decision_started = -1.0
        self._decide_lock = threading.Lock()
        self._wake = threading.Condition()
        self._next_check: float | None = None  # time.time()
        self._stopping = threading.Event()
        self.httpd = _Listener((host, port), _handler(self))

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def serve_forever(self) -> None:
        checker = threading.Thread(target=self._recheck_loop, name="dispatch-recheck",
                                   daemon=True)
        checker.start()
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self._stopping.set()
            with self._wake:
                self._wake.notify_all()
            self.httpd.server_close()

    def shutdown(self) -> None:
        self.httpd.shutdown()

    def wake_up(self, body: bytes) -> None:
        """A push delivery: remember, gather, decide once for the burst."""
        received = time.monotonic()
        self.dispatcher.note_arrival(arrival_from_push(body, time.time()))
        time.sleep(max(0.0, received + self.gather_seconds - time.monotonic()))
        self.decide(trigger="push", unless_seen_since=received)

    def decide(self, *, trigger: str, unless_seen_since: float | None = None) -> None:
        with self._decide_lock:
            if unless_seen_since is not None and self._last_decision_started >= unless_seen_since:
                return  # a decision of this process started after this arrival was recorded
            self._last_decision_started = time.monotonic()
            record = self.dispatcher.decide_once(trigger=trigger)
        self._schedule(record.get("next_check_at"))

    def _schedule(self, at: float | None) -> None:
        if at is None:
            return
        with self._wake:
            if self._next_check is None or at < self._next_check:
                self._next_check = at
                self._wake.notify_all()

    def _recheck_loop(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                now = time.time()
                horizon = [now + MAX_RECHECK_SECONDS]
                if self._next_check is not None:
                    horizon.append(self._next_check)
                if self.check_every_seconds:
                    horizon.append(now + self.check_every_seconds)
                due = min(horizon)
                if due > now:
                    self._wake.wait(timeout=due - now)
                    continue
                self._next_check = None
            try:
                self.decide(trigger="timer")
            except DispatchError as exc:
                logger.error("dispatch: scheduled decision failed: %s", exc)
            except Exception:
                logger.exception("dispatch: scheduled decision failed")


def _handler(server: DispatchServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                self._reply(200, {"status": "ok"})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                if path == "/push":
                    server.wake_up(body)
                elif path == "/check":
                    server.decide(trigger="check")
                else:
                    self._reply(404, {"error": "not found"})
                    return
            except NotAPushDelivery as exc:
                self._reply(400, {"error": str(exc)})
                return
            except DispatchError as exc:
                logger.error("dispatch: decision failed: %s", exc)
                self._reply(500, {"error": str(exc)})
                return
            except Exception as exc:  # the record's database, a bug: Pub/Sub retries the push
                logger.exception("dispatch: decision failed")
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})
                return
            self.send_response(204)
            self.end_headers()

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("dispatch http: " + format, *args)

    return Handler
