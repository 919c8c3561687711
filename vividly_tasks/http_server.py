"""The HTTP server under both listeners that face a network: ``vividly dispatch serve`` and
service mode's ``/healthz`` and ``/readyz``.

It is waitress (Pylons; pure Python, no C extension to build in the image, released
regularly, its request-smuggling and pipelining advisories fixed in the 3.0 line), chosen for
its limits and its shape:

- **Nothing is handed to the application until the request is whole.** One event loop reads
  every connection; a thread serves a request only once its headers and body have arrived. A
  slow or half-sent request costs a file descriptor and a buffer, never a thread (the
  thread-per-connection ``http.server`` gave each one a thread for as long as it liked).
- **Caps before reading**: the headers (``max_request_header_size``, answered 431) and the body
  (``max_request_body_size``, answered 413 as soon as ``Content-Length`` says so, or as a chunked
  body passes the cap). A ``Content-Length`` that is not a number is a 400; the body is never
  read to EOF.
- **Bounded concurrency**: ``threads`` requests at once (the rest wait in a queue) and at most
  ``connection_limit`` open connections (then the listener stops accepting until some close).

What waitress leaves out, added here through its own extension points (``error_task_class``,
``channel_class``, ``maintenance``):

- Its refusals are answered with a JSON body and logged as one JSON line with the status
  (``"event": "http_refused"``); waitress itself logs none of them.
- A **request deadline**: a request whose headers and body have not all arrived
  ``request_timeout_seconds`` after its first byte is answered 408 and its connection closed
  (waitress only closes connections idle for ``channel_timeout``, which a client trickling a
  byte at a time never is).

uvicorn/h11 and aiohttp expose some of these limits too, but need an asyncio application and
neither caps a request's total read time; gunicorn does not run inside a Celery worker's
thread. ``EdgeServer`` runs in the calling thread (``serve_forever``) until ``shutdown``.
"""

from __future__ import annotations

import http
import ipaddress
import json
import logging
import resource
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher
from waitress.utilities import Error

logger = logging.getLogger(__name__)

#: How often the event loop wakes up with nothing to do: the granularity of the request
#: deadline and of ``shutdown``.
LOOP_TIMEOUT_SECONDS = 0.5
#: File descriptors kept free for everything else the process opens (logs, the record,
#: database connections) on top of the connection limit.
SPARE_FILE_DESCRIPTORS = 256


@dataclass(frozen=True)
class EdgeLimits:
    """What one listener accepts; every figure is a ceiling, enforced before the app runs."""

    #: Largest request body, bytes (413 above it).
    max_body_bytes: int
    #: Largest request line and headers together, bytes (431 above them).
    max_header_bytes: int = 16 * 1024
    #: A request's headers and body must all arrive within this many seconds of its first
    #: byte (408 otherwise).
    request_timeout_seconds: float = 10.0
    #: A connection with no request in progress is closed after this many idle seconds.
    idle_timeout_seconds: float = 60.0
    #: Requests served at once; more wait in waitress's queue.
    threads: int = 4
    #: Open connections at most; beyond it the listener stops accepting for a while.
    connection_limit: int = 100


class RequestTimeout(Error):  # type: ignore[misc]
    code = 408
    reason = "Request Timeout"


class _RefusalTask(ErrorTask):  # type: ignore[misc]
    """Waitress's answer to a request it refused (400, 408, 413, 431), as JSON, logged."""

    def execute(self) -> None:
        error = self.request.error
        peer = self.channel.addr[0] if isinstance(self.channel.addr, tuple) else None
        logger.warning(
            "http: refused a request with %d %s: %s", error.code, error.reason, error.body,
            extra={"event": "http_refused", "status": error.code, "detail": error.body,
                   "listener": self.channel.server.listener_name, "peer": peer,
                   "path": getattr(self.request, "path", None) or None},
        )
        body = json.dumps({"error": error.reason, "detail": error.body}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):  # type: ignore[misc]
    """Remembers when the request being read began, for the request deadline."""

    error_task_class = _RefusalTask
    #: The parser of the request being read (waitress's attribute, typed here).
    request: Any = None
    #: ``time.monotonic()`` of the first byte of the request being read, or None.
    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        # Runs on the event loop's thread, as ``maintenance`` does: no lock needed for it.
        if self.request is None:
            self.request_started = time.monotonic()
        result: bool = super().received(data)
        if self.request is None:
            self.request_started = None
        return result

    def time_out(self) -> None:
        """Answer the partial request 408, as waitress answers a request it cannot parse."""
        with self.requests_lock:
            request = self.request
            if request is None or self.will_close or self.close_when_flushed:
                return
            request.error = RequestTimeout(
                "the request's headers and body did not all arrive in time")
            request.completed = True
            self.request = None
            self.request_started = None
            self.requests.append(request)
            if len(self.requests) == 1:
                self.server.add_task(self)


class _Listener(TcpWSGIServer):  # type: ignore[misc]
    channel_class = _Channel
    listener_name = "http"
    request_timeout_seconds = 10.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes connections idle for channel_timeout
        cutoff = time.monotonic() - self.request_timeout_seconds
        for channel in list(self.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff:
                channel.time_out()


class EdgeServer:
    """A WSGI app served on ``host:port`` within ``limits``."""

    def __init__(self, app: WSGIApplication, *, host: str, port: int, limits: EdgeLimits,
                 name: str) -> None:
        self.name = name
        self.limits = limits
        _ensure_file_descriptors(limits.connection_limit + SPARE_FILE_DESCRIPTORS)
        adjustments = Adjustments(
            host=host, port=port, threads=limits.threads,
            connection_limit=limits.connection_limit,
            channel_timeout=limits.idle_timeout_seconds,
            # The request deadline is checked at each cleanup: often, not every 30 s.
            cleanup_interval=1,
            max_request_header_size=limits.max_header_bytes,
            max_request_body_size=limits.max_body_bytes,
            # select() cannot watch descriptors above 1023; a thousand connections need poll.
            asyncore_use_poll=True,
            asyncore_loop_timeout=LOOP_TIMEOUT_SECONDS,
            ident=name, expose_tracebacks=False,
            # Requests reach us directly or through Cloud Run's front end; no proxy headers
            # are trusted (waitress drops them).
            clear_untrusted_proxy_headers=True,
        )
        self._map: dict[int, Any] = {}
        self._tasks = ThreadedTaskDispatcher()
        self._tasks.set_thread_count(limits.threads)
        self._listeners = []
        for sockinfo in adjustments.listen:
            listener = _Listener(app, self._map, True, None, dispatcher=self._tasks,
                                 adj=adjustments, sockinfo=sockinfo)
            listener.listener_name = name
            listener.request_timeout_seconds = limits.request_timeout_seconds
            self._listeners.append(listener)
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return int(self._listeners[0].effective_port)

    @property
    def host(self) -> str:
        return str(self._listeners[0].effective_host)

    def serve_forever(self) -> None:
        """Serve until ``shutdown``; then stop the threads and close every connection."""
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=LOOP_TIMEOUT_SECONDS, map=self._map, use_poll=True,
                               count=1)
        finally:
            self._tasks.shutdown(cancel_pending=True, timeout=5)
            wasyncore.close_all(self._map)
            self._stopped.set()

    def shutdown(self, timeout_seconds: float | None = None) -> None:
        """Stop serving (from any thread, or a signal handler); with a timeout, wait for it."""
        self._stopping.set()
        if timeout_seconds is not None:
            self._stopped.wait(timeout_seconds)

    def close(self) -> None:
        """Release the listening sockets of a server that never served."""
        if not self._stopped.is_set():
            wasyncore.close_all(self._map)
            self._tasks.shutdown(cancel_pending=True, timeout=1)


def json_response(start_response: StartResponse, status: int, payload: dict[str, Any] | None,
                  headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer ``status`` with ``payload`` as JSON (no body for None)."""
    body = b"" if payload is None else json.dumps(payload).encode()
    response_headers = [("Content-Length", str(len(body))), *headers]
    if payload is not None:
        response_headers.append(("Content-Type", "application/json"))
    start_response(f"{status} {http.HTTPStatus(status).phrase}", response_headers)
    return [body]


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def _ensure_file_descriptors(wanted: int) -> None:
    """Raise the soft limit on open files to ``wanted`` where the hard limit allows: each
    connection is one descriptor, and a common soft default (1,024) is below our limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        logger.warning("http: only %d file descriptors allowed; %d wanted for the connection "
                       "limit", target, wanted)
