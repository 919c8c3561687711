"""A loopback TCP proxy that puts a network's distance between clients and a server.

Every chunk read from one side is written to the other ``delay_ms`` (plus up to ``jitter_ms``)
after it was read, so a request/response pair costs ``2 x delay_ms`` more: the round trip of
a client in one zone and Pub/Sub in another. Each direction of each connection has its own
delay queue: the reader keeps reading while earlier chunks wait, so a 20 ms delay adds 20 ms
of latency to a stream without capping it at one chunk per 20 ms (a sleep per read would).
Bytes leave in the order they came (a jittered chunk never overtakes an earlier one).

Run by the benchmarks as a child process (``ProxyProcess``), so its event loop never waits
for the benchmark's GIL; it exits when its parent closes its stdin (or dies) and on SIGTERM::

    .venv/bin/python -m harness.latency_proxy --target 127.0.0.1:8085 --delay-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

READ_BYTES = 64 * 1024
STOP_TIMEOUT_SECONDS = 5.0
LISTENING = "listening on "


@dataclass(frozen=True)
class Delay:
    """One direction's delay: ``delay_ms`` always, plus a uniform draw up to ``jitter_ms``."""

    delay_ms: float
    jitter_ms: float = 0.0

    def draw_seconds(self) -> float:
        jitter = random.uniform(0.0, self.jitter_ms) if self.jitter_ms else 0.0
        return (self.delay_ms + jitter) / 1000


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay) -> None:
    """Copy ``reader`` to ``writer``, each chunk held until its due time.

    The read side and the write side run concurrently around a queue of (due, chunk): the
    delay is latency, not a limit on throughput. Dues never decrease, which keeps the order.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read_side() -> None:
        last_due = 0.0
        try:
            while chunk := await reader.read(READ_BYTES):
                last_due = max(last_due, loop.time() + delay.draw_seconds())
                queue.put_nowait((last_due, chunk))
        finally:
            # EOF (or a reset): the half-close travels with the same delay as the data.
            queue.put_nowait((max(last_due, loop.time() + delay.draw_seconds()), b""))

    async def write_side() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await reading


@dataclass
class LatencyProxy:
    """Listens on 127.0.0.1 and forwards every connection to ``target`` with the delays."""

    target_host: str
    target_port: int
    upstream: Delay  # client -> server
    downstream: Delay  # server -> client
    port: int = 0
    connections: int = field(default=0, init=False)

    async def handle(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(
                self.target_host, self.target_port)
        except OSError:
            client_writer.close()
            return
        directions = [
            asyncio.ensure_future(pump(client_reader, server_writer, self.upstream)),
            asyncio.ensure_future(pump(server_reader, client_writer, self.downstream)),
        ]
        try:
            # Each side half-closes on its own; a reset on either ends both.
            await asyncio.gather(*directions)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is stopping: the connections end with it, quietly
        finally:
            for task in directions:
                task.cancel()
            for writer in (server_writer, client_writer):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()

    async def serve(self, stop: asyncio.Event) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = server.sockets[0].getsockname()[1]
        print(f"{LISTENING}{self.port}", flush=True)
        async with server:
            await stop.wait()


async def run(proxy: LatencyProxy) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    def watch_parent() -> None:
        # stdin reaches EOF when the benchmark closes it or dies: never outlive it.
        sys.stdin.buffer.read()
        loop.call_soon_threadsafe(stop.set)

    # A daemon thread, not the loop's executor: asyncio.run would wait for it at exit.
    threading.Thread(target=watch_parent, name="parent-watch", daemon=True).start()
    await proxy.serve(stop)


@dataclass
class ProxyProcess:
    """The proxy as a child process of the benchmark; ``address`` is its ``host:port``."""

    target: str
    rtt_ms: float
    jitter_ms: float = 0.0
    process: subprocess.Popen[str] | None = field(default=None, init=False)
    port: int = field(default=0, init=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ProxyProcess:
        # Half the round trip each way, and half the jitter each way.
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--target", self.target,
             "--delay-ms", str(self.rtt_ms / 2), "--jitter-ms", str(self.jitter_ms / 2)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "" if it died at start
        if not line.startswith(LISTENING):
            self.stop()
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        self.port = int(line[len(LISTENING):])
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the server")
    parser.add_argument("--port", type=int, default=0, help="where to listen (0: any free)")
    parser.add_argument("--delay-ms", type=float, required=True, help="per direction")
    parser.add_argument("--jitter-ms", type=float, default=0.0,
                        help="per direction, uniform, added to --delay-ms")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    delay = Delay(args.delay_ms, args.jitter_ms)
    asyncio.run(run(LatencyProxy(host, int(port), delay, delay, args.port)))


if __name__ == "__main__":
    main()
