"""The settings object: environment in, typed values and masked URLs out."""

from __future__ import annotations

from pathlib import Path

import pytest

from vividly_tasks.lessons.settings import Settings
from vividly_tasks.settings import SettingsError
from vividly_tasks.worker.redaction import mask_url_password


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = Settings()
    assert settings.uses_embedded_broker
    assert settings.effective_broker_url == "filesystem://"
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_storage_url.startswith("file://")
    assert settings.effective_result_backend.startswith("db+sqlite:///")
    assert settings.resolved_data_dir == tmp_path / "data"


def test_environment_variables_are_read_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_URL", "pubsub://my-project")
    monkeypatch.setenv("WORKER_IDLE_TIMEOUT", "5")
    monkeypatch.setenv("WORKER_MAX_TASKS", "10")
    monkeypatch.setenv("PUBSUB_AUTO_CREATE", "false")
    settings = Settings()
    assert settings.worker_idle_timeout == 5.0
    assert settings.worker_max_tasks == 10
    options = settings.broker_transport_options()
    assert options["auto_create"] is False
    assert options["max_lease_seconds"] == 7200


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_MAX_TASKS", "lots")
    with pytest.raises(SettingsError, match="WORKER_MAX_TASKS: 'lots' is not a valid"):
        Settings()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:hunter2@host:6379/0", "redis://:****@host:6379/0"),
        ("postgresql://app:hunter2@db/vividly", "postgresql://app:****@db/vividly"),
        ("pubsub://my-project", "pubsub://my-project"),
        ("filesystem://", "filesystem://"),
    ],
)
def test_url_passwords_are_masked(url: str, masked: str) -> None:
    assert mask_url_password(url) == masked
