"""The benchmarks' latency proxy (harness/latency_proxy.py): it adds its delay to a round trip,
keeps the bytes in order, and does not cap a stream's throughput at one chunk per delay."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from harness.latency_proxy import READ_BYTES, ProxyProcess

RTT_MS = 100.0


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(READ_BYTES):
            self.request.sendall(data)


@pytest.fixture
def proxied_echo() -> Iterator[ProxyProcess]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ProxyProcess(f"127.0.0.1:{server.server_address[1]}", RTT_MS) as proxy:
            yield proxy
    finally:
        server.shutdown()
        server.server_close()


def connect(proxy: ProxyProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def test_a_round_trip_takes_the_delay_both_ways(proxied_echo: ProxyProcess) -> None:
    with connect(proxied_echo) as sock:
        samples = []
        for i in range(3):
            started = time.perf_counter()
            sock.sendall(b"ping %d" % i)
            assert sock.recv(100) == b"ping %d" % i
            samples.append(time.perf_counter() - started)
    assert min(samples) >= RTT_MS / 1000
    assert min(samples) < 3 * RTT_MS / 1000


def test_a_stream_is_delayed_not_throttled(proxied_echo: ProxyProcess) -> None:
    # 4 MiB is 64 chunks: throttled to one chunk per 50 ms delay it would take over 3 s.
    payload = bytes(range(256)) * (4 * 1024 * 4)
    received = bytearray()
    with connect(proxied_echo) as sock:
        started = time.perf_counter()
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        while len(received) < len(payload):
            chunk = sock.recv(READ_BYTES)
            assert chunk, "the proxy closed the stream early"
            received += chunk
        elapsed = time.perf_counter() - started
        sender.join()
    assert received == payload  # every byte, in order
    assert elapsed < 1.5, f"{elapsed:.2f} s for 4 MiB through a {RTT_MS:g} ms round trip"


def test_it_exits_when_its_parent_lets_go() -> None:
    proxy = ProxyProcess("127.0.0.1:9", 0.0).start()
    process = proxy.process
    assert process is not None
    proxy.stop()
    assert process.returncode == 0
