"""How long a job execution lasts on an empty queue: process start to exit, per idle timeout.

Runs ``python -m worker_entry job --idle-timeout T`` against an empty queue for T = 1, 5 and
30 s over each broker it can start here (the embedded filesystem broker; Redis and the Pub/Sub
emulator when installed, each started privately on a free port and stopped by PID), and
writes the figures to docs/entrypoint.md next to the old loop's. Not a timed test:

    .venv/bin/python -m bench.idle_exit [--repeat 3] [--timeouts 1 5 30] [--pools prefork]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.services import (
    ServiceProcess,
    ServiceUnavailable,
    start_pubsub_emulator,
    start_redis,
)
from harness.workers import READY_MARKER, WorkerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent

DOC_PATH = REPO_ROOT / "docs" / "entrypoint.md"
BrokerEnv = Callable[[Path], AbstractContextManager[dict[str, str]]]


@contextmanager
def embedded(workdir: Path) -> Iterator[dict[str, str]]:
    yield {}


@contextmanager
def redis_broker(workdir: Path) -> Iterator[dict[str, str]]:
    server = start_redis(workdir)
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        yield {"BROKER_URL": url, "RESULT_BACKEND": url}
    finally:
        server.stop()


@contextmanager
def pubsub_broker(workdir: Path) -> Iterator[dict[str, str]]:
    server: ServiceProcess = start_pubsub_emulator(workdir)
    try:
        yield {
            "BROKER_URL": f"pubsub://bench-{uuid.uuid4().hex[:8]}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{server.port}",
        }
    finally:
        server.stop()


BROKERS: dict[str, BrokerEnv] = {
    "embedded": embedded, "redis": redis_broker, "pubsub": pubsub_broker,
}


def one_run(
    env: dict[str, str], workdir: Path, idle_timeout: float, pool: str
) -> tuple[float, float]:
    """(start-up, wall) in seconds: process start to " ready.", and to exit."""
    log = workdir / f"job-{uuid.uuid4().hex[:6]}.log"
    worker = WorkerProcess(
        [sys.executable, "-m", "worker_entry", "job", "--idle-timeout", str(idle_timeout),
         "--pool", pool],
        env, log,
    ).start()
    ready_at = None
    while worker.process is not None and worker.process.poll() is None:
        if ready_at is None and READY_MARKER in worker.logs():
            ready_at = time.monotonic()
        time.sleep(0.01)
    ended = time.monotonic()
    if worker.process is None or worker.process.returncode != 0 or ready_at is None:
        raise RuntimeError(f"job failed:\n{worker.logs()[-3000:]}")
    return ready_at - worker.started_at, ended - worker.started_at


@dataclass(frozen=True)
class Row:
    broker: str
    pool: str
    idle: float
    startup: float
    wall: float
    runs: int


def measure(
    brokers: list[str], timeouts: list[float], repeat: int, pools: list[str]
) -> list[Row]:
    rows: list[Row] = []
    for name in brokers:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            workdir = Path(tmp)
            try:
                context = BROKERS[name](workdir)
                broker_env = context.__enter__()
            except ServiceUnavailable as exc:
                print(f"{name}: skipped ({exc})")
                continue
            try:
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("WORKER_")},
                    **broker_env, "VIVIDLY_DATA_DIR": str(workdir / "data"),
                }
                for pool in pools:
                    for timeout in timeouts:
                        runs = [one_run(env, workdir, timeout, pool) for _ in range(repeat)]
                        startup = statistics.median(r[0] for r in runs)
                        wall = statistics.median(r[1] for r in runs)
                        rows.append(Row(name, pool, timeout, startup, wall, len(runs)))
                        print(f"{name:9s} {pool:8s} idle {timeout:4g} s: start-up "
                              f"{startup:5.2f} s, wall {wall:6.2f} s, "
                              f"over idle {wall - timeout:5.2f} s")
            finally:
                context.__exit__(None, None, None)
    return rows


def write_doc(rows: list[Row]) -> None:
    table = "\n".join(
        f"| {r.broker} | {r.pool} | {r.idle:g} | {r.startup:.2f} | {r.wall:.2f} "
        f"| {r.wall - r.idle:.2f} | {r.runs} |"
        for r in rows
    )
    text = DOC_PATH.read_text() if DOC_PATH.exists() else ""
    begin, end = "<!-- bench/idle_exit.py begin -->", "<!-- bench/idle_exit.py end -->"
    block = (
        f"{begin}\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
        f"({os.cpu_count()} CPUs), median of the runs:\n\n"
        "| broker | pool | `--idle-timeout` (s) | start-up (s) | wall, start to exit (s) "
        "| wall - idle (s) | runs |\n|---|---|---|---|---|---|---|\n"
        f"{table}\n{end}"
    )
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += ("\n" if text else "") + block + "\n"
    DOC_PATH.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=list(BROKERS))
    parser.add_argument("--timeouts", nargs="+", type=float, default=[1.0, 5.0, 30.0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pools", nargs="+", default=["prefork"],
                        choices=["prefork", "threads", "solo"])
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    rows = measure(args.brokers, args.timeouts, args.repeat, args.pools)
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")
    if not args.no_write:
        write_doc(rows)
        print(f"wrote {DOC_PATH}")


if __name__ == "__main__":
    main()
