"""The dispatcher's HTTP endpoint (``vividly dispatch serve``), a Cloud Run service scaled to
zero in production.

- ``POST /push``: the wake-up push subscription delivers here. The caller's OIDC token is
  checked first (``push_auth``: 401 without a valid one, 403 for another account, 503 when
  Google's certificates cannot be fetched), then the delivery must come from the wake-up
  subscription (403 otherwise; nothing is remembered). The arrival is remembered at once.
  The first push after a quiet ``gather_seconds`` decides at once (a single request starts in
  seconds); a push within ``gather_seconds`` of this process's last push decision is
  answered 204 as soon as it is recorded, and one decision at the interval's end covers
  every arrival of the interval. No push waits for another: a burst is seen as fast as
  Pub/Sub pushes it, whatever its push concurrency (Pub/Sub ramps it up slowly), and a
  request behind a burst waits behind none of its wake-ups. The launches grow with the
  burst (``decision``: more tasks while arrivals exceed what runs covers). 400 for a body
  that is not a push delivery (Pub/Sub never sends one); 500 when a decision failed, so
  Pub/Sub redelivers that wake-up later (its retry policy backs off).
- ``POST /check``: a decision without an arrival (the safety-net schedule); the same token.
- ``GET /healthz``: 200, no token (Cloud Run's probes).

Served by ``vividly_tasks.http_server`` (waitress) within ``dispatch_limits``: a push body is a
task message, base64 in JSON (Pub/Sub allows 10 MB, but a task message is a few KB: Celery's
advice is to pass references, not data), so ``DISPATCH_MAX_PUSH_BYTES`` (1 MiB) is answered 413
above it, and the task is still counted by the backlog and the safety net. A request must
arrive whole within ``DISPATCH_REQUEST_TIMEOUT_SECONDS`` (408).

A decision that says when to look again (the window's end, a delayed task coming due, the
end of a gather interval) is made by the process's timer thread; on Cloud Run, deploy the
service with CPU always allocated (``--no-cpu-throttling``, docs/cloud-run.md) so that
thread runs between requests; the safety-net schedule covers an instance that is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from wsgiref.types import StartResponse, WSGIEnvironment

from vividly_tasks.dispatch.arrivals import (
    ForeignSubscription,
    NotAPushDelivery,
    arrival_from_push,
)
from vividly_tasks.dispatch.dispatcher import Dispatcher
from vividly_tasks.dispatch.errors import DispatchError
from vividly_tasks.dispatch.push_auth import PushAuthError, PushVerifier
from vividly_tasks.dispatch.settings import DispatchSettings
from vividly_tasks.http_server import EdgeLimits, EdgeServer, json_response

logger = logging.getLogger(__name__)

#: Longest wait of the in-process re-check, so an idle server still looks now and then.
MAX_RECHECK_SECONDS = 600.0
#: Requests served at once: each push holds its thread for the gather, so a burst needs many
#: (Cloud Run's --concurrency of docs/cloud-run.md stays below it); more wait in the queue.
PUSH_THREADS = 128
#: Open connections at most. An idle or half-sent one costs a descriptor and a buffer, not a
#: thread, so a thousand slow clients leave room for Pub/Sub's requests.
MAX_CONNECTIONS = 2000


def dispatch_limits(settings: DispatchSettings) -> EdgeLimits:
    return EdgeLimits(max_body_bytes=settings.dispatch_max_push_bytes,
                      request_timeout_seconds=settings.dispatch_request_timeout_seconds,
                      threads=PUSH_THREADS, connection_limit=MAX_CONNECTIONS)


class DispatchServer:
    """Serves the endpoints until ``shutdown``; ``serve_forever`` blocks."""

    def __init__(self, dispatcher: Dispatcher, *, host: str, port: int,
                 gather_seconds: float, verifier: PushVerifier, limits: EdgeLimits,
                 wake_up_subscription: str | Sequence[str] | None = None,
                 check_every_seconds: float | None = None) -> None:
        self.dispatcher = dispatcher
        self.gather_seconds = gather_seconds
        self.verifier = verifier
        self.wake_up_subscription = wake_up_subscription
        self.check_every_seconds = check_every_seconds
        self._decide_lock = threading.Lock()
        #: A push is deciding for this process; when the last push decision started.
        self._deciding = False
        self._last_push_decision = -float("inf")
        self._decider_lock = threading.Lock()
        self._wake = threading.Condition()
        self._next_check: float | None = None  # time.time()
        self._stopping = threading.Event()
        self.http = EdgeServer(self.app, host=host, port=port, limits=limits, name="dispatch")

    @property
    def port(self) -> int:
        return self.http.port

    def serve_forever(self) -> None:
        checker = threading.Thread(target=self._recheck_loop, name="dispatch-recheck",
                                   daemon=True)
        checker.start()
        try:
            self.http.serve_forever()
        finally:
            self._stopping.set()
            with self._wake:
                self._wake.notify_all()

    def shutdown(self) -> None:
        """Stop serving (safe in a signal handler)."""
        self.http.shutdown()

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application: the whole request has arrived, within the limits."""
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")
        if path == "/healthz" and method in ("GET", "HEAD"):
            return json_response(start_response, 200, {"status": "ok"})
        if path not in ("/push", "/check"):
            return json_response(start_response, 404, {"error": "not found"})
        if method != "POST":
            return json_response(start_response, 405, {"error": "POST only"},
                                 [("Allow", "POST")])
        status, reason = self._post(path, environ)
        if status == 204:
            return json_response(start_response, 204, None)
        if status >= 500:  # logged where it failed; the detail stays in the log
            return json_response(start_response, status, {"error": reason})
        logger.warning("dispatch: refused %s with %d: %s", path, status, reason,
                       extra={"event": "dispatch_refused", "status": status, "path": path,
                              "peer": environ.get("REMOTE_ADDR")})
        headers = [("WWW-Authenticate", "Bearer")] if status == 401 else []
        return json_response(start_response, status, {"error": reason}, headers)

    def _post(self, path: str, environ: WSGIEnvironment) -> tuple[int, str]:
        """Check the caller, then wake up or decide: the status and, unless 204, why."""
        try:
            self.verifier.verify(environ.get("HTTP_AUTHORIZATION"))
            if path == "/push":
                length = int(environ.get("CONTENT_LENGTH") or 0)  # checked by the server
                self.wake_up(environ["wsgi.input"].read(length))
            else:
                self.decide(trigger="check")
        except PushAuthError as exc:
            if exc.status >= 500:
                logger.error("dispatch: cannot check the caller: %s", exc)
                return exc.status, "cannot check the token now"
            return exc.status, str(exc)
        except (ForeignSubscription, NotAPushDelivery) as exc:
            return (403 if isinstance(exc, ForeignSubscription) else 400), str(exc)
        except Exception as exc:  # Pub/Sub retries the push
            if isinstance(exc, DispatchError):
                logger.error("dispatch: decision failed: %s", exc)
            else:  # the record's database, a bug
                logger.exception("dispatch: decision failed")
            return 500, "decision failed"
        return 204, ""

    def wake_up(self, body: bytes) -> None:
        """A push delivery: remember it; decide now, unless this process decided less than
        ``gather_seconds`` ago (or is deciding): then a decision at the interval's end
        covers it, and the push is answered at once."""
        self.dispatcher.note_arrival(arrival_from_push(
            body, time.time(), subscription=self.wake_up_subscription))
        now = time.monotonic()
        with self._decider_lock:
            next_allowed = self._last_push_decision + self.gather_seconds
            if self._deciding or now < next_allowed:
                self._schedule(time.time() + max(0.0, next_allowed - now))
                return
            self._deciding = True
            self._last_push_decision = now
        try:
            self.decide(trigger="push")
        finally:
            with self._decider_lock:
                self._deciding = False

    def decide(self, *, trigger: str) -> None:
        with self._decide_lock:
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
