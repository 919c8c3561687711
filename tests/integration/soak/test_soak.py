"""The chaos soak, short version: real job workers killed at random while they drain
content requests over Pub/Sub, on PostgreSQL; nothing may be lost or completed twice.

The orchestration lives in harness/soak.py (the long run is bench/soak.py); this test runs
it with the suite's emulator, Redis and PostgreSQL, ~1 minute of chaos.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.services import ServiceProcess
from harness.soak import SoakConfig, SoakServices, run_soak


def test_short_soak_loses_nothing_and_completes_nothing_twice(
    pubsub_emulator: ServiceProcess, pubsub_project: str, redis_url: str, postgres_url: str,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = SoakConfig.short()
    report = run_soak(config, SoakServices(
        emulator_host=os.environ["PUBSUB_EMULATOR_HOST"], project=pubsub_project,
        redis_url=redis_url, database_url=postgres_url, workdir=tmp_path,
    ))
    with capsys.disabled():
        print(f"\n{report.line()}")
    assert report.problems == [], f"{report.line()}\n" + "\n".join(report.problems)
    # The chaos happened: kills of both kinds, while work was going on.
    assert report.sigkills >= 1 and report.sigterms >= 1, report.line()
    assert report.worker_starts > config.workers, report.line()
    assert report.requests == config.requests
    assert report.deliveries >= config.requests + report.published_twice
    assert report.duplicates_suppressed >= report.published_twice  # each found it done/claimed
    assert report.dead_lettered == report.poison == 7
    assert report.unexpected_exits == []
