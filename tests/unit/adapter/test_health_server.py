"""Service mode's ``/healthz`` and ``/readyz`` listener (the bootstep, started as the worker
starts it) on its real server: a failing broker probe's text never reaches the caller, only
the log; a request that never finishes is answered 408, a body 413."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from harness.services import free_port
from worker_entry.health_server import HEALTH_LIMITS, HealthConfig, HealthServer, HealthState

SECRET_DETAIL = "redis://:hunter2@10.20.30.40:6379/0 refused the connection"


def refuse() -> None:
    raise ConnectionRefusedError(SECRET_DETAIL)


@pytest.fixture
def listener(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[HealthServer, int]]:
    # The first probe runs at start: its warning is captured whatever level an earlier test
    # of this process left on the root logger.
    caplog.set_level(logging.WARNING, logger="worker_entry.health_server")
    port = free_port()
    step = HealthServer(object(), vividly_health=HealthConfig("127.0.0.1", port, refuse),
                        vividly_health_state=HealthState(consuming=True))
    step.start(None)
    try:
        yield step, port
    finally:
        step.stop(None)
        step.close_listener()


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def exchange(port: int, data: bytes, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except OSError:
            pass
        return reply


def test_readiness_says_why_in_fixed_words_and_the_log_says_the_rest(
        listener: tuple[HealthServer, int], caplog: pytest.LogCaptureFixture) -> None:
    _, port = listener
    with caplog.at_level(logging.WARNING, logger="worker_entry.health_server"):
        deadline = time.monotonic() + 10
        while (answer := get(port, "/readyz"))[1].get("broker_probe_age_seconds", 99) > 5:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.5)  # a second probe fails the same way: logged once
    status, body = answer
    assert status == 503
    assert body["reason"] == "broker_unreachable" and body["broker_reachable"] is False
    assert "hunter2" not in json.dumps(body) and "10.20.30.40" not in json.dumps(body)
    assert get(port, "/healthz")[0] == 200  # alive through a broker outage
    records = caplog.get_records("setup") + caplog.get_records("call")  # the first probe
    logged = [r for r in records if "does not answer" in r.getMessage()]
    assert len(logged) == 1 and SECRET_DETAIL in logged[0].getMessage()


def test_a_slow_request_is_answered_408_and_a_body_413(
        listener: tuple[HealthServer, int]) -> None:
    _, port = listener
    started = time.monotonic()
    reply = exchange(port, b"GET /readyz HTTP/1.1\r\nHost: h\r\n",
                     timeout=HEALTH_LIMITS.request_timeout_seconds + 5)
    # Its headers never ended, so its HTTP version was never read: waitress answers 1.0.
    assert reply.split(b"\r\n")[0].endswith(b" 408 Request Timeout"), reply[:100]
    assert time.monotonic() - started < HEALTH_LIMITS.request_timeout_seconds + 3
    reply = exchange(port, b"POST /readyz HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"
                     b"0123456789", timeout=5)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:100]
