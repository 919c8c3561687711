"""``vividly dispatch serve`` under hostile traffic, in a real process: a thousand half-sent
requests held open and a hundred oversize bodies while real pushes still launch within their
gather; a request that never finishes answered 408; a malformed ``Content-Length`` answered
400 and logged as one JSON line, with no traceback."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.dispatch import DispatchServe, api_env, apis, post, push_body
from harness.fakes.cloud_run import FakeCloudRun
from harness.fakes.monitoring import FakeMonitoring
from harness.push_tokens import CertsServer, TokenIssuer, certs, google, verify_env

__all__ = ["apis", "certs", "google"]  # the fixtures

SLOW_CONNECTIONS = 1000
OVERSIZE_BODIES = 100
REQUEST_TIMEOUT_SECONDS = 8
GATHER_SECONDS = 1.0



@pytest.fixture
def dispatcher(apis: tuple[FakeMonitoring, FakeCloudRun], certs: CertsServer,
               tmp_path: Path) -> Iterator[DispatchServe]:
    server = DispatchServe({**api_env(apis), **verify_env(certs),
                            "DISPATCH_GATHER_SECONDS": str(GATHER_SECONDS),
                            "DISPATCH_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS)},
                           tmp_path / "dispatch.log")
    yield server
    server.stop()


def connect(server: DispatchServe) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def half_sent(server: DispatchServe, token: str) -> socket.socket:
    """A push whose headers promise 400 bytes of body, of which one arrives."""
    sock = connect(server)
    sock.sendall(b"POST /push HTTP/1.1\r\nHost: dispatcher\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 400\r\n\r\n{")
    return sock


def answer(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """What the server says before it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:  # reset after an answer to a body it refused to read
        pass
    return data


def oversize(server: DispatchServe, token: str) -> bytes:
    """A push announcing 2 MiB (the cap is 1 MiB): refused before the body is read."""
    with connect(server) as sock:
        sock.sendall(b"POST /push HTTP/1.1\r\nHost: dispatcher\r\nAuthorization: Bearer "
                     + token.encode() + b"\r\nContent-Length: 2097152\r\n\r\n"
                     + b"x" * 65536)
        return answer(sock)


def still_waiting(sock: socket.socket) -> bool:
    """Open, and answered nothing yet."""
    sock.setblocking(False)
    try:
        return not sock.recv(1)  # b"": closed
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    finally:
        sock.setblocking(True)


def server_threads(server: DispatchServe) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def test_slow_and_oversize_requests_do_not_keep_real_pushes_from_launching(
        apis: tuple[FakeMonitoring, FakeCloudRun], dispatcher: DispatchServe,
        google: TokenIssuer) -> None:
    _, cloud_run = apis
    token = google.token()
    threads_before = server_threads(dispatcher)
    opened = time.monotonic()
    slow = [half_sent(dispatcher, token) for _ in range(SLOW_CONNECTIONS)]
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            refusals = [pool.submit(oversize, dispatcher, token) for _ in range(OVERSIZE_BODIES)]
            started = time.monotonic()
            real = [pool.submit(post, f"{dispatcher.url}/push", push_body(f"real-{n}"),
                                token=token) for n in range(3)]
            assert [f.result() for f in real] == [204, 204, 204]
            served_in = time.monotonic() - started
            answers = [f.result() for f in refusals]
        # The three wake-ups gathered into one launch, sized for them, within the gather
        # and its decision (seconds, not the request deadline the slow ones wait out).
        assert [r.overrides.task_count for r in cloud_run.run_requests] == [1]
        assert served_in < GATHER_SECONDS + 4, served_in
        assert all(a.startswith(b"HTTP/1.1 413 ") for a in answers), {a[:40] for a in answers}
        # The slow ones are all still held, and hold no thread.
        assert time.monotonic() - opened < REQUEST_TIMEOUT_SECONDS
        assert sum(still_waiting(s) for s in slow) == SLOW_CONNECTIONS
        threads_held = server_threads(dispatcher)
        assert threads_held == threads_before, (threads_before, threads_held)
        # Then each gets its 408 at the deadline, and none of them was remembered.
        timed_out = [answer(s, timeout=REQUEST_TIMEOUT_SECONDS + 5) for s in slow[:20]]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in timed_out), timed_out[0][:200]
        assert dispatcher.decisions()[-1]["inputs"]["arrivals"]["known"] == 3  # type: ignore[index]
        print(f"{SLOW_CONNECTIONS} slow connections, {OVERSIZE_BODIES} oversize bodies: "
              f"real pushes answered in {served_in:.2f} s (gather {GATHER_SECONDS} s); "
              f"server threads {threads_before} before, {threads_held} while held")
    finally:
        for sock in slow:
            sock.close()
    refused = [r for r in dispatcher.log_records() if r.get("event") == "http_refused"]
    assert {r["status"] for r in refused} == {408, 413}


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b"18446744073709551617x"])
def test_a_malformed_content_length_is_a_400_in_a_json_log_line_without_a_traceback(
        dispatcher: DispatchServe, length: bytes) -> None:
    with connect(dispatcher) as sock:
        sock.sendall(b"POST /push HTTP/1.1\r\nHost: dispatcher\r\nContent-Length: " + length
                     + b"\r\n\r\n{}")
        started = time.monotonic()
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
    assert time.monotonic() - started < 5  # answered, not read to EOF
    assert b'"Content-Length is invalid"' in reply
    refused = [r for r in dispatcher.log_records()
               if r.get("event") == "http_refused" and r.get("status") == 400]
    assert refused and refused[-1]["severity"] == "WARNING"
    assert refused[-1]["detail"] == "Content-Length is invalid"
    assert "Traceback" not in dispatcher.log_path.read_text()
