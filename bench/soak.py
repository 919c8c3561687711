"""Chaos soak, the long run: content requests over Pub/Sub while job workers are killed, and
nothing is lost (harness/soak.py says how, and what it checks).

    .venv/bin/python -m bench.soak                  # the long run: 500 requests, ~6 min
    .venv/bin/python -m bench.soak --requests 60 --publish-seconds 30   # a short one

It prints one line of figures; ``--json PATH`` writes them for ``bench/all.py``. It starts its
own emulator, Redis and PostgreSQL on loopback and stops them by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg

from harness.services import start_postgres, start_pubsub_emulator, start_redis
from harness.soak import SoakConfig, SoakServices, run_soak


# --- the script's own services -----------------------------------------------------------
@contextlib.contextmanager
def own_services(workdir: Path) -> Iterator[SoakServices]:
    """Emulator, Redis and a private PostgreSQL cluster on loopback, stopped by PID after."""

    stack: list[Any] = []
    try:
        emulator = start_pubsub_emulator(workdir)
        stack.append(emulator)
        redis_server = start_redis(workdir)
        stack.append(redis_server)
        cluster = start_postgres()
        stack.append(cluster)
        admin = cluster.url.replace("postgresql+psycopg", "postgresql")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute('CREATE DATABASE "soak"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield SoakServices(
            emulator_host=f"127.0.0.1:{emulator.port}",
            project=f"soak-{uuid.uuid4().hex[:8]}",
            redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
            database_url=cluster.url.rsplit("/", 1)[0] + "/soak",
            workdir=workdir,
        )
    finally:
        for service in reversed(stack):
            service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    defaults = SoakConfig()
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--video-share", type=float, default=defaults.video_share)
    parser.add_argument("--duplicate-share", type=float, default=defaults.duplicate_share)
    parser.add_argument("--publish-seconds", type=float, default=defaults.publish_seconds)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = SoakConfig(
        requests=args.requests, video_share=args.video_share,
        duplicate_share=args.duplicate_share, publish_seconds=args.publish_seconds,
        concurrency=args.concurrency, seed=args.seed,
    )
    workdir = Path(tempfile.mkdtemp(prefix="vividly-soak-"))
    with own_services(workdir) as services:
        report = run_soak(config, services)
    print(report.line(), flush=True)
    for problem in report.problems:
        print(f"  {problem}")
    for note in report.unexpected_exits:
        print(f"  note: {note}")
    if args.json:
        figures = {**report.as_dict(), "config": asdict(config),
                   "command": " ".join([".venv/bin/python", "-m", "bench.soak", *sys.argv[1:]])}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.keep or report.problems:
        print(f"work directory (logs): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
