"""Registering the transport changes nothing but Kombu's alias table.

Each probe runs in a fresh interpreter: the test process imported everything long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from harness.workers import REPO_ROOT

# A user's app exists; then the one documented line runs. Everything a library could touch
# is recorded before and after: the current app, every app, every Celery signal's receivers,
# the logging tree's handlers and formatters, the GC's frozen count, environment reads.
PROBE = """
import gc, json, logging, os, sys
from collections.abc import MutableMapping
from celery import Celery, _state, current_app, signals

# What the libraries we build on do when imported (Celery's modules read REMAP_SIGTERM and
# the like) is theirs: imported first, so what is recorded is ours.
import celery.concurrency.prefork, celery.worker.consumer, celery.worker.request
import click, pythonjsonlogger.json

user_app = Celery("theirs", broker="memory://", set_as_current=True)


class RecordingEnviron(MutableMapping):
    def __init__(self, real):
        self.real, self.read = real, []
    def __getitem__(self, key):
        self.read.append(key)
        return self.real[key]
    def __setitem__(self, key, value):
        self.real[key] = value
    def __delitem__(self, key):
        del self.real[key]
    def __iter__(self):
        self.read.append("*")
        return iter(self.real)
    def __len__(self):
        return len(self.real)
    def __contains__(self, key):
        self.read.append(key)
        return key in self.real


def state():
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    return {
        "current_app_is_theirs": current_app._get_current_object() is user_app,
        "apps": len(_state._apps),
        "receivers": {
            name: len(signal.receivers) for name, signal in vars(signals).items()
            if isinstance(signal, signals.Signal)
        },
        "handlers": sorted(
            f"{logger.name}:{type(h).__name__}:{type(h.formatter).__name__}"
            for logger in loggers for h in logger.handlers
            # Celery's modules give their loggers a NullHandler as they are imported.
            if not isinstance(h, logging.NullHandler)
        ),
        "root_level": logging.getLogger().level,
        "frozen": gc.get_freeze_count(),
    }


before = state()
environ = os.environ = RecordingEnviron(os.environ)
__LINE__
after = state()
os.environ = environ.real
from kombu.transport import TRANSPORT_ALIASES, resolve_transport
print(json.dumps({
    "before": before, "after": after, "environment_read": environ.read,
    "product_app_built": "vividly_tasks.lessons.product" in sys.modules,
    "resolved": "pubsub" in TRANSPORT_ALIASES and resolve_transport("pubsub").__module__,
}))
"""


def probe(line: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PORT": "http"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE.replace("__LINE__", line)], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def test_importing_the_transport_registers_pubsub_and_changes_nothing_else() -> None:
    # PORT=http in the environment: our settings would reject it if anything read them.
    figures = probe("import vividly_tasks.transport")
    assert figures["after"] == figures["before"]
    assert figures["after"]["current_app_is_theirs"]
    assert figures["environment_read"] == []
    assert not figures["product_app_built"]
    assert figures["resolved"] == "vividly_tasks.transport.transport"


def test_importing_the_worker_behaviours_changes_nothing_until_attached() -> None:
    figures = probe("import vividly_tasks.worker, vividly_tasks")
    assert figures["after"] == figures["before"]
    assert figures["environment_read"] == []
    assert not figures["product_app_built"]
    assert figures["resolved"] is False  # only the transport's import registers it


def test_the_product_app_is_built_on_first_use_and_freezes_the_import() -> None:
    figures = probe("import vividly_tasks; vividly_tasks.app.conf")
    # Asking for the product app is asking for its commands: it becomes current, and
    # what import built leaves the collector's reach (tens of thousands of objects).
    assert figures["product_app_built"]
    assert not figures["after"]["current_app_is_theirs"]
    assert figures["after"]["frozen"] > 10_000


def test_detach_takes_off_everything_attach_added_and_leaves_the_apps_own_settings() -> None:
    from celery import Celery

    from vividly_tasks.worker import GUARDED_CONSUMER, attach, detach
    from vividly_tasks.worker.idle_pool import IdlePoolStop
    from vividly_tasks.worker.requests import TaskRequests

    celerys_own = Celery("plain").conf.worker_consumer
    for configured_first in (False, True):
        app = Celery("theirs")
        if configured_first:
            assert app.conf.worker_consumer == celerys_own  # reading it configures the app
        attach(app)
        assert app.conf.worker_consumer == GUARDED_CONSUMER
        assert {TaskRequests, IdlePoolStop} <= set(app.steps["worker"])
        detach(app)
        assert app.conf.worker_consumer == celerys_own, configured_first
        assert not {TaskRequests, IdlePoolStop} & set(app.steps["worker"])
    own = Celery("own-consumer")
    own.conf.worker_consumer = "their.module:Consumer"
    attach(own)
    detach(own)
    assert own.conf.worker_consumer == "their.module:Consumer"
