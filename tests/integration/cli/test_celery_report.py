"""`celery -A vividly_tasks report` in a real process: the settings, secrets masked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.workers import REPO_ROOT


def test_celery_report_prints_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKER_URL", "redis://:brokersecret@127.0.0.1:1/0")
    monkeypatch.setenv("RESULT_BACKEND", "redis://:backendsecret@127.0.0.1:1/1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:dbsecret@127.0.0.1:1/vividly")
    output = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "vividly_tasks", "report"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert "vividly_settings" in output
    assert "pubsub_max_lease_seconds" in output
    for secret in ("brokersecret", "backendsecret", "dbsecret"):
        assert secret not in output
