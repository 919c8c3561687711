"""The entrypoint's pure parts, in process: limits, the summary's arithmetic, settings merging."""

from __future__ import annotations

import pytest

from vividly_tasks.transport import receipts
from worker_entry import exit_codes
from worker_entry.cli import OVERRIDES, load_settings
from worker_entry.run import SIGTERM_BUDGET_SECONDS, ExitReason, Limits, WorkerRun
from worker_entry.summary import log_summary, summary_record


def test_the_sigterm_grace_fits_cloud_runs_budget() -> None:
    assert Limits(shutdown_grace_seconds=30).sigterm_grace_seconds < SIGTERM_BUDGET_SECONDS
    assert Limits(shutdown_grace_seconds=3).sigterm_grace_seconds == 3


def test_exit_codes_are_distinct_and_only_ok_is_zero() -> None:
    codes = {name: value for name, value in vars(exit_codes).items() if name.startswith("RET_")}
    assert len(set(codes.values())) == len(codes)
    assert [name for name, value in codes.items() if value == 0] == ["RET_OK"]


def test_summary_rates_final_outcomes_and_copies_cloud_run_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUD_RUN_TASK_INDEX", "3")
    monkeypatch.setenv("CLOUD_RUN_EXECUTION", "job-x7k2p")
    run = WorkerRun("job", Limits())
    for field, times in (("succeeded", 3), ("failed", 1), ("retried", 2)):
        for _ in range(times):
            run.counters._add(field)
    record = summary_record(run, reason=ExitReason.IDLE, exit_code=0)
    assert record["processed"] == 6
    assert record["success_rate"] == 0.75
    assert record["cloud_run_task_index"] == 3
    assert record["cloud_run_execution"] == "job-x7k2p"
    assert "cloud_run_task_attempt" not in record


@pytest.mark.parametrize(("reason", "code", "level"), [
    (ExitReason.IDLE, 0, "INFO"),
    (ExitReason.QUEUE_MISSING, 0, "WARNING"),
    (ExitReason.BAD_CONFIGURATION, exit_codes.RET_CONFIG, "ERROR"),
])
def test_the_summary_severity_follows_the_outcome_and_text_shows_the_counters(
    caplog: pytest.LogCaptureFixture, reason: ExitReason, code: int, level: str
) -> None:
    run = WorkerRun("job", Limits())
    run.counters.received = 4
    run.counters._add("succeeded")
    with caplog.at_level("INFO", logger="worker_entry.summary"):
        log_summary(run, reason=reason, exit_code=code, detail="why")
    [record] = caplog.records
    assert record.levelname == level
    # LOG_FORMAT=text prints the message alone: the counters are in it.
    assert f"worker summary: {reason} (exit_code={code} received=4 refused=0 unmatched=0 " \
        "processed=1 succeeded=1 failed=0 retried=0 runtime_seconds=" in record.getMessage()
    assert record.getMessage().endswith(": why")


def test_flags_override_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_IDLE_TIMEOUT", "45")
    monkeypatch.setenv("WORKER_MAX_TASKS", "7")
    settings = load_settings({"idle_timeout": 2.5, "max_tasks": None}, 0.0, "job")
    assert settings.worker_idle_timeout == 2.5
    assert settings.worker_max_tasks == 7


def test_every_override_names_a_setting() -> None:
    from vividly_tasks.settings import settings_fields
    from worker_entry.settings import WorkerSettings

    assert set(OVERRIDES.values()) <= {field.name for field in settings_fields(WorkerSettings)}


def test_the_summary_counts_what_the_transport_settled_during_the_run() -> None:
    counts = receipts.for_this_process()
    counts.add("dead_lettered")  # before the run: not this run's
    run = WorkerRun("job", Limits())
    run.counters.received, run.counters.refused = 3, 1
    for name in ("dead_lettered", "dropped", "unmatched", "unmatched"):
        counts.add(name)
    record = summary_record(run, reason=ExitReason.IDLE, exit_code=0)
    assert (record["received"], record["refused"], record["unmatched"]) == (5, 3, 2)


def test_the_summary_reports_the_delayed_tasks_given_back_and_the_first_due() -> None:
    counts = receipts.for_this_process()
    counts.add_released_delayed(1000.0)  # before the run: not this run's
    run = WorkerRun("job", Limits())
    assert summary_record(run, reason=ExitReason.IDLE, exit_code=0)[
        "released_delayed_first_due"] is None
    counts.add_released_delayed(1_700_000_060.5)
    counts.add_released_delayed(1_700_000_030.25)
    record = summary_record(run, reason=ExitReason.IDLE, exit_code=0)
    assert record["released_delayed"] == 2
    assert record["released_delayed_first_due"] == "2023-11-14T22:13:50.250+00:00"
