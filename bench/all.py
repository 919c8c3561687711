"""Every benchmark, one command: runs them and regenerates docs/benchmarks.md.

    .venv/bin/python -m bench.all                  # everything (~35 min on 2 cores); `make bench`
    .venv/bin/python -m bench.all --only transport # re-run one, keep the others' stored figures
    .venv/bin/python -m bench.all --render         # rewrite the doc from the stored figures

Each benchmark runs as its own command line (the ones listed in docs/benchmarks.md, each
still usable alone) with ``--json bench/results/NAME.json``; this script adds when it ran, how
long it took and the load average around it, then renders docs/benchmarks.md from every stored
result, with the machine it ran on. The benchmarks also rewrite their own pages
(docs/benchmarks-transport.md, docs/entrypoint.md, docs/benchmarks-content.md), as they do alone. A
benchmark that fails keeps its previous figures and is named in the doc and the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.transport import ROWS as TRANSPORT_ROWS
from bench.transport import (
    cpu_model,
    emulator_version,
    package_versions,
    redis_server_version,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

RESULTS_DIR = REPO_ROOT / "bench" / "results"
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
PYTHON = ".venv/bin/python"
PACKAGES = ("celery", "kombu", "google-cloud-pubsub", "grpcio", "google-cloud-monitoring",
            "redis", "SQLAlchemy", "psycopg")


@dataclass(frozen=True)
class Benchmark:
    name: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    about: str

    def command(self, quick: bool) -> list[str]:
        return [PYTHON, "-m", f"bench.{self.name}", *(self.quick_args if quick else self.args)]


BENCHMARKS = (
    Benchmark("transport", (), ("--quick", "--no-write"),
              "ours vs Kombu gcpubsub vs Redis: publish, drain, latency, idle CPU, shutdown"),
    # The same runs as docs/entrypoint.md's table (which this rewrites): all brokers, both pools.
    Benchmark("idle_exit", ("--brokers", "embedded", "redis", "pubsub", "--pools", "prefork",
                            "threads", "--repeat", "2"),
              ("--brokers", "redis", "pubsub", "--repeat", "1", "--timeouts", "1", "5",
               "--no-write"),
              "a job execution on an empty queue, process start to exit"),
    Benchmark("content", ("--video-runs", "3", "--output", "docs/benchmarks-content.md"),
              ("--text-runs", "1", "--video-runs", "1"),
              "content requests end to end: wall time and peak memory"),
    Benchmark("hosted_content", (),
              ("--runs", "3", "--no-write"),
              "the hosted lesson path's overhead against loopback servers; tokens per lesson"),
    Benchmark("scale", (), ("--tasks", "3000", "--rounds", "1"),
              "20,000 no-op tasks through one worker, three rounds: drain rate, RSS growth"),
    Benchmark("soak", (), ("--requests", "60", "--publish-seconds", "30"),
              "chaos soak: 500 content requests while workers are killed"),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_benchmark(benchmark: Benchmark, quick: bool) -> bool:
    """Run one benchmark; its figures (with when, how long, the load) go to RESULTS_DIR."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = RESULTS_DIR / f"{benchmark.name}.json"
    fresh = RESULTS_DIR / f"{benchmark.name}.json.new"
    fresh.unlink(missing_ok=True)
    command = [*benchmark.command(quick), "--json", str(fresh.relative_to(REPO_ROOT))]
    print(f"== {shlex.join(command)}", flush=True)
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    started = time.monotonic()
    exit_code = subprocess.run(command, cwd=REPO_ROOT, check=False).returncode
    run = {
        "command": shlex.join(benchmark.command(quick)), "started_at": started_at,
        "wall_seconds": round(time.monotonic() - started, 1), "exit_code": exit_code,
        "load_before": load_before, "load_after": load_average(), "quick": quick,
    }
    if not fresh.exists():
        print(f"== {benchmark.name} wrote no figures (exit {exit_code})", flush=True)
        return False
    figures = json.loads(fresh.read_text())
    target.write_text(json.dumps({"run": run, "figures": figures}, indent=2) + "\n")
    fresh.unlink()
    # The soak and the scale benchmark exit non-zero when their promise is broken: the
    # figures are still recorded (the doc shows them), but the command fails.
    return exit_code == 0


def stored() -> dict[str, dict[str, Any]]:
    results = {}
    for benchmark in BENCHMARKS:
        path = RESULTS_DIR / f"{benchmark.name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            if "run" not in data:  # the script's own --json, run outside this runner
                data = {"run": {"command": shlex.join(benchmark.command(False)),
                                "started_at": "outside bench/all.py", "wall_seconds": None,
                                "exit_code": None, "load_before": "?", "load_after": "?",
                                "quick": False}, "figures": data}
            results[benchmark.name] = data
    return results


# --- the machine -------------------------------------------------------------------------
def first_line(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return (result.stdout or result.stderr).strip().splitlines()[0] if (
        result.stdout or result.stderr).strip() else "?"


def machine() -> list[str]:
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    postgres = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores (nproc); memory {memory}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(package_versions(PACKAGES))}",
        f"- servers: Redis {redis_server_version()}; Pub/Sub emulator {emulator_version()}; "
        f"{first_line([str(postgres[-1]), '--version']) if postgres else 'PostgreSQL (none)'}",
        f"- tools: {first_line(['ffmpeg', '-version']).split(' Copyright')[0]}; "
        f"{first_line(['espeak-ng', '--version']).split('  Data at')[0]}",
        f"- load average (1/5/15 min) when this page was rendered: {load_average()}",
    ]


# --- rendering ---------------------------------------------------------------------------
def fmt(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def transport_rows(result: dict[str, Any] | None) -> list[list[str]]:
    """The transport benchmark's own rows (``bench.transport.ROWS``), from its stored figures."""
    if result is None:
        return []
    figures = result["figures"]
    sizes = figures["sizes"]
    out = []
    for key, label, scale, template, _ in TRANSPORT_ROWS:
        if key == "latency_over_floor":
            continue  # needs the floor; on the transport page
        cells = []
        for broker in ("ours", "gcpubsub", "redis"):
            column = figures["results"].get(broker)
            if column is None:
                cells.append("not run")
            elif key in column["values"]:
                cells.append(template.format(column["values"][key] * scale))
            elif key in column["failures"]:
                cells.append(f"failed: {column['failures'][key]}"[:60])
            else:
                cells.append("-")  # figures from before this measure existed
        text = label.format(tasks=sizes["tasks"], idle=sizes["idle_seconds"],
                            pings=sizes["pings"])
        out.append([text, *cells, "transport"])
    return out


def scale_rows(result: dict[str, Any] | None) -> list[list[str]]:
    """Medians over the rounds (bench/scale.py alternates the brokers); RSS of the last run."""
    if result is None:
        return []
    figures = result["figures"]
    runs = {run["broker"]: run for run in figures["runs"]}  # the last run of each broker
    medians = figures.get("medians") or {broker: run for broker, run in runs.items()}
    tasks = max(run["tasks"] for run in runs.values())

    def run_cell(broker: str, key: str, template: str, absent: str = "-") -> str:
        run = runs.get(broker)
        if run is None:
            return "not run"
        if run["failure"]:
            return f"failed: {run['failure']}"[:60]
        return absent if run.get(key) is None else template.format(run[key])

    def median_cell(broker: str, key: str, template: str, absent: str = "-") -> str:
        value = (medians.get(broker) or {}).get(key)
        if value is None:
            return run_cell(broker, key, template, absent)
        return template.format(value)

    growth = "{:+.1%}"
    not_run = "not run (drains ~20/s)"
    rounds = figures.get("rounds", 1)
    median = f", median of {rounds}" if rounds > 1 else ""
    return [
        [f"drain {tasks:,} queued no-op tasks, 1 worker (tasks/s{median})",
         median_cell("ours", "drain_rate", "{:,.0f}"), not_run,
         median_cell("redis", "drain_rate", "{:,.0f}"), "scale"],
        [f"publish {tasks:,} tasks, one producer (tasks/s{median}; ours pipelined in brackets)",
         median_cell("ours", "publish_rate", "{:,.0f}")
         + median_cell("ours", "publish_pipelined_rate", " ({:,.0f})", absent=""), not_run,
         median_cell("redis", "publish_rate", "{:,.0f}"), "scale"],
        [f"CPU per task while draining: worker tree / broker server (ms{median})",
         median_cell("ours", "worker_cpu_ms", "{:.2f}") + " / "
         + median_cell("ours", "server_cpu_ms", "{:.2f}"), not_run,
         median_cell("redis", "worker_cpu_ms", "{:.2f}") + " / "
         + median_cell("redis", "server_cpu_ms", "{:.2f}"), "scale"],
        [f"worker tree RSS after 1,000 -> after {tasks:,} tasks (MiB)",
         run_cell("ours", "rss_first_mib", "{:.0f}") + " -> "
         + run_cell("ours", "rss_end_mib", "{:.0f}"), not_run,
         run_cell("redis", "rss_first_mib", "{:.0f}") + " -> "
         + run_cell("redis", "rss_end_mib", "{:.0f}"), "scale"],
        ["RSS growth (no leak: within ±10 %)", run_cell("ours", "rss_growth", growth), not_run,
         run_cell("redis", "rss_growth", growth), "scale"],
    ]


def idle_rows(result: dict[str, Any] | None) -> list[list[str]]:
    if result is None:
        return []
    rows = result["figures"]
    out = []
    for idle in sorted({row["idle"] for row in rows}):
        cells = {row["broker"]: row for row in rows if row["idle"] == idle
                 and row["pool"] == "prefork"}
        out.append([
            f"`vividly-worker job --idle-timeout {idle:g}` on an empty queue, start -> exit (s)",
            fmt(cells["pubsub"]["wall"], "{:.2f}") if "pubsub" in cells else "not run",
            "not measured",
            fmt(cells["redis"]["wall"], "{:.2f}") if "redis" in cells else "not run",
            "idle_exit",
        ])
    return out


def content_rows(result: dict[str, Any] | None) -> list[list[str]]:
    if result is None:
        return []
    runs = {run["broker"]: run for run in result["figures"]}
    out = []
    for modality in ("text", "video"):
        cells = []
        memory = []
        for broker in ("pubsub", "redis"):
            run = runs.get(broker)
            if run is None:
                cells.append("not run")
                memory.append("not run")
                continue
            walls = [m["wall_seconds"] for m in run[modality]]
            cells.append(fmt(median(walls), "{:.2f}"))
            memory.append(fmt(max(m["peak_mib"] for m in run[modality]), "{:.0f}"))
        label = "text lesson" if modality == "text" else "5-section video lesson"
        out.append([f"{label}, submit -> completed, median (s)", cells[0], "not measured",
                    cells[1], "content"])
        out.append([f"{label}, peak memory of the worker tree (MiB)", memory[0],
                    "not measured", memory[1], "content"])
    return out


def table(rows: list[list[str]]) -> list[str]:
    lines = [
        "| measure | ours (`pubsub://`) | Kombu `gcpubsub://` | Redis | benchmark |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def soak_section(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return ["Not run yet."]
    f = result["figures"]
    config = f["config"]
    verdict = "held" if not (f["lost"] or f["executed_twice"] or f["orphans"]
                             or f["left_queued"] or f["poison_not_dead_lettered"]
                             or f["unexpected_dead_letters"] or f["missing_artifacts"]) \
        else "**broken**"
    lines = [
        f"`{result['run']['command']}` printed:",
        "",
        "```",
        f["line"],
        "```",
        "",
        f"The promise {verdict}: lost = {len(f['lost'])}, duplicates executed = "
        f"{len(f['executed_twice'])}, orphan files in storage = {len(f['orphans'])}, "
        f"left queued = {f['left_queued']}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| valid requests (text / video) | {f['requests']} ({f['text']} / {f['video']}) |",
        f"| requests published twice on purpose | {f['published_twice']} |",
        f"| poison messages | {f['poison']} |",
        f"| kills: SIGKILL (process group) / SIGTERM (worker), every "
        f"{config['kill_interval'][0]:g}-{config['kill_interval'][1]:g} s | {f['kills']} "
        f"({f['sigkills']} / {f['sigterms']}) |",
        f"| worker starts (3 slots restarted in a loop) | {f['worker_starts']} |",
        f"| task runs (deliveries that reached a task) | {f['deliveries']} |",
        f"| redeliveries (Pub/Sub delivery attempt > 1) | {f['redeliveries']} "
        f"(highest attempt {f['max_delivery_attempt']}) |",
        f"| requests re-run after a kill (a claim taken over) | {f['takeovers']} |",
        f"| duplicates suppressed: found finished / found claimed / claim lost mid-run "
        f"| {f['duplicates_suppressed']} ({f['suppressed_finished']} / "
        f"{f['suppressed_claimed']} / {f['suppressed_lost_claim']}) |",
        f"| dead-lettered (all poison, each with its reason) | {f['dead_lettered']} |",
        f"| deliveries left for the final drain worker | {f['final_drain_deliveries']} |",
        f"| lost / completed twice / orphan files / left queued | {len(f['lost'])} / "
        f"{len(f['executed_twice'])} / {len(f['orphans'])} / {f['left_queued']} |",
        f"| wall time | {f['wall_seconds']:.0f} s |",
        "",
        "Dead-letter reasons, one per poison kind:",
        "",
        *(f"- {kind}: `{reason[:160]}`" for kind, reason in f["dead_letter_reasons"].items()),
    ]
    return lines


def scale_section(result: dict[str, Any] | None) -> list[str]:
    if result is None:
        return ["Not run yet."]
    lines = [f"`{result['run']['command']}`:", "",
             "| broker | round | publish (tasks/s) | pipelined (tasks/s) | drain (tasks/s) | "
             "steady drain after 1,000 (tasks/s) | CPU/task worker, server (ms) | steal | "
             "RSS after 1,000 (MiB) | RSS at end (MiB) | growth | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in result["figures"]["runs"]:
        round_number = run.get("round", 1)
        if run["failure"]:
            lines.append(f"| {run['broker']} | {round_number} | failed: "
                         f"{run['failure'][:120]} ||||||||||")
            continue
        verdict = "no leak" if run["leak_free"] else "**over 10 %**"
        pipelined = run.get("publish_pipelined_rate")
        lines.append(
            f"| {run['broker']} | {round_number} | {run['publish_rate']:,.0f} | "
            f"{'-' if pipelined is None else f'{pipelined:,.0f}'} | {run['drain_rate']:,.0f} | "
            f"{run['steady_drain_rate']:,.0f} | {run.get('worker_cpu_ms', 0):.2f}, "
            f"{run.get('server_cpu_ms', 0):.2f} | {run.get('steal_share', 0):.0%} | "
            f"{run['rss_first_mib']:.0f} | {run['rss_end_mib']:.0f} | "
            f"{run['rss_growth']:+.1%} | {verdict} |")
    lines += ["", "Drain rate per 1,000 tasks, and RSS of the worker tree after each 1,000 "
              "tasks (MiB):", ""]
    for run in result["figures"]["runs"]:
        rates = " ".join(f"{x:.0f}" for x in run.get("rate_curve", []))
        curve = ", ".join(f"{x:.0f}" for x in run["rss_curve_mib"])
        lines.append(f"- {run['broker']}, round {run.get('round', 1)}: rate {rates or '-'}; "
                     f"RSS {curve or '-'}")
    for bare in result["figures"].get("bare", []):
        if bare["failure"]:
            lines.append(f"- bare client, round {bare['round']}: failed: {bare['failure'][:120]}")
            continue
        lines.append(
            f"- bare client, round {bare['round']} (google-cloud-pubsub alone, two threads Pull "
            f"one and ack): {bare['drain_rate']:,.0f}/s; rate "
            f"{' '.join(f'{x:.0f}' for x in bare['rate_curve'])}; emulator CPU per message (ms) "
            f"{' '.join(f'{x:.2f}' for x in bare['server_cpu_curve'])}")
    return lines


def scale_tasks(result: dict[str, Any] | None) -> str:
    if result is None or not result["figures"]["runs"]:
        return "20,000"
    return f"{max(run['tasks'] for run in result['figures']['runs']):,}"


def runs_table(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| benchmark | command | run at | wall | load average before -> after | exit |",
             "|---|---|---|---|---|---|"]
    for benchmark in BENCHMARKS:
        result = results.get(benchmark.name)
        if result is None:
            lines.append(f"| {benchmark.name} | `{shlex.join(benchmark.command(False))}` "
                         "| not run | | | |")
            continue
        run = result["run"]
        quick = " (quick)" if run["quick"] else ""
        lines.append(
            f"| {benchmark.name} | `{run['command']}`{quick} | {run['started_at']} | "
            f"{wall_minutes(run['wall_seconds'])} | {run['load_before']} -> {run['load_after']} "
            f"| {run['exit_code']} |")
    return lines


def wall_minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f} min"


# --- at cloud distance (render only: bench/cloud_distance.py runs on its own) -------------
#: bench/cloud_distance.py's start-up and CLI paths, and their names in the targets table.
CLOUD_PATHS = (
    ("start_ready", "`celery worker` start -> ready"),
    ("job_ready", "`vividly-worker job` start -> ready"),
    ("call", "`celery call`"),
    ("ping", "`celery inspect ping`"),
    ("submit", "`vividly submit`"),
    ("provision_verify", "`vividly provision --verify`"),
)
CLOUD_RTT = 20.0  # ms: the round trip the targets are set at
#: Variants of bench/cloud_distance.py that measure something else than the product's
#: settings (another prefetch, pull-ahead off, only the paths).
OTHER_SETTINGS = ("--prefetch-multiplier", "--pull-ahead", "--paths-only")


def cloud_run() -> tuple[str, dict[str, Any], str] | None:
    """The latest run of bench/cloud_distance.py (bench/results/cloud_distance*.json) with our
    transport at 0 ms and at ``CLOUD_RTT``, on the product's settings: (file, entry, name)."""
    runs = []
    for path in sorted(RESULTS_DIR.glob("cloud_distance*.json")):
        for name, entry in json.loads(path.read_text()).items():
            columns = entry.get("results", {})
            if "ours@0" in columns and f"ours@{CLOUD_RTT:g}" in columns and not any(
                    option in name for option in OTHER_SETTINGS):
                runs.append((entry.get("started_at", ""), path.name, entry, name))
    if not runs:
        return None
    _, file_name, entry, name = max(runs, key=lambda run: run[0])
    return file_name, entry, name


def cloud_section() -> list[str]:
    found = cloud_run()
    if found is None:
        return ["Not run yet: `.venv/bin/python -m bench.cloud_distance --rtt-ms 0 20 "
                "--brokers ours --loopback --rounds 3`."]
    file_name, entry, name = found
    near = entry["results"]["ours@0"]["values"]
    far = entry["results"][f"ours@{CLOUD_RTT:g}"]["values"]
    rtt = CLOUD_RTT / 1000

    def ratio(key: str, bar: float, what: str, unit: str = "/s") -> list[str]:
        if key not in near or key not in far:
            return [what, "not measured", "-"]
        got = far[key] / near[key]
        return [what, f"{got:.2f}x ({far[key]:,.1f} vs {near[key]:,.1f}{unit})",
                "met" if got >= bar else "**missed**"]

    rows = [
        ratio("drain_noop", 0.8, "no-op drain >= 0.8x its loopback rate"),
        ratio("drain_nap", 0.9, "50 ms tasks drain >= 0.9x"),
    ]
    if "latency" in near and "latency" in far:
        limit = near["latency"] + 1.5 * rtt
        rows.append([f"apply_async -> start <= loopback + 1.5 round trips "
                     f"({1000 * limit:.0f} ms)", f"{1000 * far['latency']:.0f} ms "
                     f"(loopback {1000 * near['latency']:.0f} ms)",
                     "met" if far["latency"] <= limit else "**missed**"])
    rows.append(ratio("publish_pipelined", 0.8, "pipelined publish >= 0.8x"))
    if "publish_confirmed" in far:
        rows.append(["confirmed publish: one round trip per task (pipelined publish is the "
                     "answer for many tasks from one thread)",
                     f"{1000 / far['publish_confirmed']:.1f} ms per task "
                     f"({1000 / near['publish_confirmed']:.1f} on loopback)",
                     "by design"])
    for key, label in CLOUD_PATHS:
        if key not in near or key not in far:
            rows.append([f"{label} within 2x its loopback time", "not measured", "-"])
            continue
        got = far[key] / near[key]
        trips = far.get(f"{key}_sequential")
        calls = far.get(f"{key}_calls")
        counted = "" if trips is None else f"; {calls:.0f} calls, {trips:.0f} sequential"
        rows.append([f"{label} within 2x its loopback time, or its round trips named",
                     f"{got:.2f}x ({far[key]:.2f} vs {near[key]:.2f} s{counted})",
                     "met" if got <= 2 else f"**{got:.1f}x**: {trips or '?':g} round trips"])
    return [
        f"Our transport at a {CLOUD_RTT:g} ms round trip (a latency proxy between every Pub/Sub "
        "client and the emulator) against itself on loopback: `bench/results/"
        f"{file_name}`, entry `{name}`, run {entry.get('started_at', '?')} with "
        f"`{entry.get('command', '?')}`, medians of its rounds; code measured: "
        f"{entry.get('code', '?')}. "
        "Analysis: [at cloud distance](benchmarks-cloud-distance.md).",
        "",
        "| target | figure | met? |",
        "|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render(results: dict[str, dict[str, Any]], failed: list[str]) -> str:
    transport = results.get("transport")
    code = transport["figures"].get("code", "?") if transport else "?"
    rows = [*transport_rows(transport), *scale_rows(results.get("scale")),
            *idle_rows(results.get("idle_exit")), *content_rows(results.get("content"))]
    quick = [name for name, r in results.items() if r["run"]["quick"]]
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by bench/all.py from bench/results/*.json; edit bench/all.py, "
        "not this file. -->",
        "",
        "Regenerated by one command, `make bench` (= `.venv/bin/python -m bench.all`, about "
        "35 minutes on this machine); `python -m bench.all --only NAME` re-runs one benchmark and "
        "keeps the stored figures of the others. Each benchmark's own command, its options "
        "and its own page are in [bench/README.md](../bench/README.md).",
        "",
    ]
    if quick:
        lines += [f"**Quick smoke figures (small N) for: {', '.join(quick)}.**", ""]
    if failed:
        lines += [f"**Failed in the last run (earlier figures kept where there were any): "
                  f"{', '.join(failed)}.**", ""]
    lines += [
        "## The machine",
        "",
        *machine(),
        f"- transport code measured: {code}",
        "",
        "The machine is shared with other engineers' test runs (see the load averages below): "
        "compare brokers within one benchmark, not absolute figures across runs.",
        "",
        "## Ours against Kombu's `gcpubsub` and Redis",
        "",
        "Same harness for every broker within each benchmark (the Pub/Sub emulator for ours "
        "and for `gcpubsub`, a private Redis). \"not measured\": that benchmark does not run "
        "the broker (Kombu's `gcpubsub` has no product wiring for content or job workers, and "
        "drains too slowly for 20,000 tasks).",
        "",
        *table(rows),
        "",
        "Details and analysis: [transport](benchmarks-transport.md), "
        "[job idle exit](entrypoint.md), [content pipeline](benchmarks-content.md).",
        "",
        "## At cloud distance",
        "",
        *cloud_section(),
        "",
        "## Chaos soak",
        "",
        "Three `vividly-worker job` workers, restarted in a loop, drain content requests over "
        "the Pub/Sub emulator into PostgreSQL while a killer sends SIGKILL or SIGTERM to a "
        "random one; poison messages and deliberate duplicates are mixed in. How it works and "
        "what it checks: [bench/soak.py](../bench/soak.py) and [soak](soak.md).",
        "",
        *soak_section(results.get("soak")),
        "",
        "## Memory and scale",
        "",
        f"{scale_tasks(results.get('scale'))} no-op tasks published first, then drained by "
        "one prefork worker (`--concurrency 2`); RSS summed over the worker's process tree.",
        "",
        *scale_section(results.get("scale")),
        "",
        "## Runs and commands",
        "",
        *runs_table(results),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), help="run only these")
    parser.add_argument("--skip", nargs="+", choices=list(BY_NAME), default=[],
                        help="do not run these")
    parser.add_argument("--render", action="store_true",
                        help="run nothing; rewrite the doc from the stored figures")
    parser.add_argument("--quick", action="store_true", help="small N everywhere (smoke)")
    args = parser.parse_args()
    failed: list[str] = []
    if not args.render:
        names = args.only or [b.name for b in BENCHMARKS]
        for name in names:
            if name in args.skip:
                continue
            if not run_benchmark(BY_NAME[name], args.quick):
                failed.append(name)
    DOC_PATH.write_text(render(stored(), failed))
    print(f"wrote {DOC_PATH.relative_to(REPO_ROOT)}" + (f"; failed: {', '.join(failed)}"
                                                         if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
