"""bench/all.py's "At cloud distance" section: which stored run it reads, and how a path that
misses its bar is shown (with its round trips)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import all as bench_all


def entry(started_at: str, near: dict[str, float], far: dict[str, float]) -> dict[str, object]:
    return {"command": "bench/cloud_distance.py", "started_at": started_at, "code": "commit x",
            "results": {"ours@0": {"values": near}, "ours@20": {"values": far}}}


def test_the_latest_run_on_the_products_settings_and_a_slow_path_names_its_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    near = {"drain_noop": 500.0, "drain_nap": 36.0, "latency": 0.020,
            "publish_pipelined": 3000.0, "publish_confirmed": 700.0,
            "call": 0.7, "submit": 1.0, "submit_calls": 9.0, "submit_sequential": 7.0}
    far = {"drain_noop": 300.0, "drain_nap": 35.0, "latency": 0.045,
           "publish_pipelined": 2900.0, "publish_confirmed": 42.0,
           "call": 0.9, "submit": 2.5, "submit_calls": 9.0, "submit_sequential": 7.0}
    runs = {
        "default": entry("2026-12-05 21:28 UTC", near, {**far, "drain_noop": 1.0}),
        "--brokers ours": entry("2026-12-06 02:51 UTC", near, far),
        "--brokers ours --pull-ahead 0": entry("2026-12-06 03:00 UTC", near, far),
    }
    (tmp_path / "cloud_distance.json").write_text(json.dumps(runs))
    monkeypatch.setattr(bench_all, "RESULTS_DIR", tmp_path)
    lines = bench_all.cloud_section()
    assert "entry `--brokers ours`, run 2026-12-06 02:51 UTC" in lines[0]
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| ")}
    assert rows["| no-op drain >= 0.8x its loopback rate"].endswith("| **missed** |")
    assert rows["| 50 ms tasks drain >= 0.9x"].endswith("| met |")
    assert "45 ms" in rows["| apply_async -> start <= loopback + 1.5 round trips (50 ms)"]
    assert "23.8 ms per task" in rows[
        "| confirmed publish: one round trip per task (pipelined publish is the answer for "
        "many tasks from one thread)"]
    submit = rows["| `vividly submit` within 2x its loopback time, or its round trips named"]
    assert "9 calls, 7 sequential" in submit and submit.endswith("| **2.5x**: 7 round trips |")
    assert rows["| `celery call` within 2x its loopback time, or its round trips named"] \
        .endswith("| met |")
    assert "not measured" in rows["| `vividly provision --verify` within 2x its loopback time"]
