"""pytest fixtures to test a Celery app's own tasks over ``pubsub://`` on the emulator.

Installed with the package as a pytest plugin (entry point ``vividly_tasks``). Say which app,
as ``celery -A`` takes it, in the pytest configuration (``pubsub_celery_app =
billing:app``) or by overriding the ``pubsub_celery_app`` fixture; then::

    def test_add(pubsub_celery_app, pubsub_celery_worker):
        assert pubsub_celery_app.send_task("billing.add", (2, 3)).get(timeout=10) == 5

* ``pubsub_emulator_host`` (session): ``PUBSUB_EMULATOR_HOST`` if set, else an emulator
  started for the session on a free loopback port (and stopped after it).
* ``pubsub_broker_url`` (test): ``pubsub://test-<random>``, a project of the test's own, so
  no topic, subscription or message of another test is seen; ``PUBSUB_EMULATOR_HOST`` is set
  for the test.
* ``pubsub_celery_app`` (test): the app, on that broker, with results in memory
  (``cache+memory://``, which the embedded worker shares); its configuration is restored after.
* ``pubsub_celery_worker`` (test): an embedded worker (Celery's ``start_worker``, solo pool)
  consuming the app's queues over ``pubsub://``, stopped after the test.

Fixture names carry ``pubsub_`` so that they sit beside ``celery.contrib.pytest``'s.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vividly_tasks.testing.emulator import start_pubsub_emulator

APP_OPTION = "pubsub_celery_app"
#: What the test app's configuration is switched to, and back after the test.
SWITCHED = ("broker_url", "result_backend")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(APP_OPTION, "The Celery app the pubsub_* fixtures test, as celery -A takes it "
                  "(module or module:attribute).")


@pytest.fixture(scope="session")
def pubsub_emulator_host() -> Iterator[str]:
    configured = os.environ.get("PUBSUB_EMULATOR_HOST")
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="pubsub-emulator-") as workdir:
        emulator = start_pubsub_emulator(Path(workdir))
        try:
            yield emulator.host
        finally:
            emulator.stop()


@pytest.fixture
def pubsub_broker_url(pubsub_emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # Set for the test alone, as Google's clients read it when a connection is made.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator_host)
    return f"pubsub://test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pubsub_celery_app(request: pytest.FixtureRequest, pubsub_broker_url: str) -> Iterator[Any]:
    from celery.app.utils import find_app  # noqa: PLC0415 - Celery loads only when used

    import vividly_tasks.transport  # noqa: F401, PLC0415 - registers pubsub://

    name = request.config.getini(APP_OPTION)
    if not name:
        raise pytest.UsageError(
            f"say which Celery app to test: {APP_OPTION} = module:app in the pytest "
            "configuration, or override the pubsub_celery_app fixture"
        )
    app = find_app(name)
    before = {key: app.conf.get(key) for key in SWITCHED}
    forget_connections(app)
    app.conf.update(broker_url=pubsub_broker_url, result_backend="cache+memory://")
    app.set_current()
    try:
        yield app
    finally:
        forget_connections(app)
        app.conf.update(before)


def forget_connections(app: Any) -> None:
    """Drop the app's pools of connections and producers, so that the next publish connects
    to the broker configured now (a module-level app outlives each test's broker). What
    Celery itself resets after a fork."""
    app.close()
    if "amqp" in vars(app):
        app.amqp._producer_pool = None


@pytest.fixture
def pubsub_celery_worker(pubsub_celery_app: Any) -> Iterator[Any]:
    from celery.contrib.testing.worker import start_worker  # noqa: PLC0415

    with start_worker(pubsub_celery_app, pool="solo", perform_ping_check=False,
                      shutdown_timeout=10.0) as worker:
        yield worker
