"""What one hostile message costs a consumer: ours on Pub/Sub vs a plain Kombu consumer on Redis.

For each kind of hostile message (compression bombs, JSON nesting and item floods, a flood of
attributes or headers), the probe puts the message on a queue followed by one good message,
then starts a fresh consumer process and reports its peak RSS growth (``VmHWM``) and the time
until it had the good message, and what became of the hostile one. Ours is a plain Kombu
``Consumer`` over ``pubsub://`` on the emulator that opted in to compression
(``accept_compression``), so the bombs meet the bounded decoder; the peer is the same consumer
over Kombu's Redis transport, where Kombu decodes as it always does. Not a timed test:

    .venv/bin/python -m bench.hostile [--kinds bz2 gzip ...] [--brokers ours redis]
                                      [--json bench/results/hostile.json] [--write]

``--write`` puts the table into docs/security.md between its probe markers. Needs the Pub/Sub
emulator and redis-server; each is started on a free loopback port and stopped by PID.
"""

from __future__ import annotations

import argparse
import base64
import bz2
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis as redis_client
from google.pubsub_v1 import PubsubMessage
from kombu import Connection, Consumer, Producer, Queue

import vividly_tasks.transport  # noqa: F401  (registers pubsub://)
from harness.services import start_pubsub_emulator, start_redis
from vividly_tasks.transport.clients import clients_for_this_process
from vividly_tasks.transport.naming import (
    dead_letter_id,
    resource_id,
    subscription_path,
    topic_path,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

DOC_PATH = REPO_ROOT / "docs" / "security.md"
BEGIN, END = "<!-- hostile-probe:begin -->", "<!-- hostile-probe:end -->"
QUEUE = "probe"
PREFIX = "vividly-"
SENTINEL = {"sentinel": True}
BOMB_BYTES = 1024 * 1024 * 1024  # what a bomb decodes to
DEPTH = 100_000
CHILD_TIMEOUT_SECONDS = 120.0


def envelope(body: str | bytes, headers: dict[str, Any]) -> dict[str, Any]:
    binary = isinstance(body, bytes)
    return {
        "body": base64.b64encode(body).decode() if binary else body,
        "content-type": "application/json", "content-encoding": "utf-8", "headers": headers,
        "properties": {"body_encoding": "base64" if binary else None,
                       "delivery_info": {"exchange": "", "routing_key": QUEUE},
                       "delivery_mode": 2, "priority": 0, "delivery_tag": uuid.uuid4().hex},
    }


def hostile_kinds() -> dict[str, Callable[[], tuple[dict[str, Any] | bytes, dict[str, str]]]]:
    """Each kind: the message (an envelope, or raw data) and its Pub/Sub attributes (on Redis,
    which has none, the attributes become headers)."""
    zeros = b"\0" * BOMB_BYTES
    task = {"task": "probe.task", "id": "hostile", "lang": "py"}

    def compressed(data: bytes, name: str) -> Callable[[], tuple[dict[str, Any], dict[str, str]]]:
        return lambda: (envelope(data, {**task, "compression": name}), {})

    deflated = zlib.compress(zeros, 9)
    return {
        "good message alone": lambda: (envelope(json.dumps([[], {}, {}]), task), {}),
        # What any message near Pub/Sub's 10 MB costs to receive, hostile or not.
        "good 9 MB message": lambda: (envelope(json.dumps([["a" * 9_000_000], {}, {}]), task),
                                      {}),
        "bz2 bomb": compressed(bz2.compress(zeros, 9), "application/x-bz2"),
        "gzip bomb": compressed(deflated, "gzip"),
        "zlib bomb": compressed(deflated, "zlib"),
        "JSON nested 100,000 deep (data)": lambda: (b"[" * DEPTH + b"]" * DEPTH, {}),
        "JSON nested 100,000 deep (body)": lambda: (
            envelope("[" * DEPTH + "]" * DEPTH, task), {}),
        "3,000,000 JSON objects (body)": lambda: (
            envelope("[" + "{}," * 3_000_000 + "{}]", task), {}),
        "10,000 attributes": lambda: (envelope(json.dumps([[], {}, {}]), task),
                                      {f"flood-{i}": "x" * 64 for i in range(10_000)}),
    }


def peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


# --- the consumer, in a fresh process per message -----------------------------------------------
def consume(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Consume until the good message arrives: elapsed seconds, peak RSS growth, what the
    consumer saw of the hostile message, or the error that stopped it."""
    seen: list[str] = []
    done: list[bool] = []

    def on_message(body: Any, message: Any) -> None:
        if body == SENTINEL:
            done.append(True)
        else:
            seen.append(f"delivered to the consumer ({len(message.body)} body bytes)")
        message.ack()

    with Connection(url, transport_options=options) as connection:
        queue = Queue(QUEUE, routing_key=QUEUE)
        connection.default_channel  # noqa: B018 - the clients and channel, before the baseline
        # Read before consuming starts: on Pub/Sub, Pulls (and decoding) begin at once.
        before, started = peak_rss_bytes(), time.monotonic()
        with Consumer(connection, [queue], callbacks=[on_message], accept=["json"]):
            outcome = "took the good message"
            try:
                while not done and time.monotonic() - started < CHILD_TIMEOUT_SECONDS:
                    try:
                        connection.drain_events(timeout=1)
                    except TimeoutError:
                        continue
                if not done:
                    outcome = "never took the good message"
            except Exception as exc:  # what a plain consumer does with it
                outcome = f"stopped by {type(exc).__name__}"
            return {"seconds": round(time.monotonic() - started, 3),
                    "rss_growth_bytes": peak_rss_bytes() - before,
                    "outcome": outcome, "hostile": seen}


# --- the brokers --------------------------------------------------------------------------------
@contextmanager
def ours(workdir: Path) -> Iterator[tuple[str, dict[str, Any], Callable[..., None]]]:
    server = start_pubsub_emulator(workdir)
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{server.port}"
    project = f"probe-{uuid.uuid4().hex[:8]}"
    url = f"pubsub://{project}"
    options = {"accept_compression": "gzip,bzip2,xz", "prefix": PREFIX}
    try:
        def put(message: dict[str, Any] | bytes, attributes: dict[str, str]) -> None:
            with Connection(url, transport_options=options) as connection:
                # A queue on the default exchange is made by its first bind, publish or
                # consume: bind it, so the raw publish below has a subscription to land in.
                connection.default_channel.queue_bind(QUEUE, exchange="", routing_key=QUEUE)
                data = message if isinstance(message, bytes) else json.dumps(message).encode()
                clients_for_this_process().publisher.publish(
                    topic=topic_path(project, resource_id(PREFIX, QUEUE)),
                    messages=[PubsubMessage(data=data, attributes={
                        "kombu-envelope": "1", "exchange": "", "routing_key": QUEUE,
                        **attributes})], timeout=60)
                Producer(connection).publish(SENTINEL, routing_key=QUEUE, serializer="json")

        yield url, options, put
    finally:
        server.stop()


@contextmanager
def redis(workdir: Path) -> Iterator[tuple[str, dict[str, Any], Callable[..., None]]]:
    server = start_redis(workdir)
    url = f"redis://127.0.0.1:{server.port}/0"
    try:
        def put(message: dict[str, Any] | bytes, attributes: dict[str, str]) -> None:
            if isinstance(message, dict):
                message = {**message, "headers": {**message["headers"], **attributes}}
                message = json.dumps(message).encode()
            with redis_client.Redis.from_url(url) as client:
                client.delete(QUEUE)
                client.lpush(QUEUE, message)  # where Kombu's Redis transport keeps a queue
            with Connection(url) as connection:
                Producer(connection).publish(SENTINEL, routing_key=QUEUE, serializer="json")

        yield url, {}, put
    finally:
        server.stop()


BROKERS = {"ours": ours, "redis": redis}


def probe(broker: str, kinds: list[str], workdir: Path) -> dict[str, dict[str, Any]]:
    makers = hostile_kinds()
    results: dict[str, dict[str, Any]] = {}
    with BROKERS[broker](workdir) as (url, options, put):
        for kind in kinds:
            message, attributes = makers[kind]()
            put(message, attributes)
            size = len(message) if isinstance(message, bytes) else len(json.dumps(message))
            child = subprocess.run(
                [sys.executable, "-m", "bench.hostile", "--child", url, json.dumps(options)],
                cwd=REPO_ROOT,
                capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS + 60,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False,
            )
            lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
            result: dict[str, Any] = (json.loads(lines[-1]) if lines else {
                "outcome": f"consumer died (exit {child.returncode}): "
                           f"{child.stderr.strip().splitlines()[-1:]}", "hostile": []})
            result["message_bytes"] = size
            if broker == "ours":
                result["hostile"] = result.get("hostile") or dead_letter_reasons(url)
            results[kind] = result
            print(f"{broker:5} {kind:34} {describe(result)}", flush=True)
    return results


def dead_letter_reasons(url: str) -> list[str]:
    project = url.removeprefix("pubsub://")
    path = subscription_path(project, dead_letter_id(resource_id(PREFIX, QUEUE)))
    subscriber = clients_for_this_process().subscriber
    try:
        response = subscriber.pull(subscription=path, max_messages=10, timeout=5)
    except Exception:
        return []
    if response.received_messages:
        subscriber.acknowledge(subscription=path,
                               ack_ids=[m.ack_id for m in response.received_messages])
    return [f"dead-lettered: {m.message.attributes['dead_letter_reason']}"
            for m in response.received_messages]


def describe(result: dict[str, Any]) -> str:
    growth = result.get("rss_growth_bytes")
    seconds = result.get("seconds")
    figures = (f"{growth / 2**20:,.1f} MB, {seconds:.2f} s" if growth is not None
               and seconds is not None else "-")
    what = "; ".join(result.get("hostile") or []) or "-"
    return f"{figures}; {result['outcome']}; hostile: {what}"


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    kinds = list(next(iter(results.values())))
    lines = ["| hostile message | size | " + " | ".join(
        f"{broker}: peak RSS growth, time" for broker in results) + " |",
        "|---|---|" + "---|" * len(results)]
    for kind in kinds:
        size = next(iter(results.values()))[kind]["message_bytes"]
        cells = []
        for broker in results:
            result = results[broker][kind]
            if result.get("rss_growth_bytes") is None:
                cells.append(result["outcome"])
                continue
            what = "; ".join(result.get("hostile") or [])
            what = f" ({what[:160]})" if what else ""
            cells.append(f"{result['rss_growth_bytes'] / 2**20:,.1f} MB, "
                         f"{result['seconds']:.2f} s: {result['outcome']}{what}")
        lines.append(f"| {kind} | {size:,} B | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_doc(markdown: str) -> None:
    text = DOC_PATH.read_text()
    if BEGIN not in text:
        raise SystemExit(f"{DOC_PATH} has no {BEGIN} marker")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC_PATH.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(consume(sys.argv[2], json.loads(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(hostile_kinds()))
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=list(BROKERS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write", action="store_true", help="update docs/security.md")
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="hostile-probe-") as workdir:
        for broker in args.brokers:
            results[broker] = probe(broker, args.kinds, Path(workdir))
    markdown = table(results)
    print(markdown)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.write:
        write_doc(markdown)


if __name__ == "__main__":
    main()
