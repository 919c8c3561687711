"""The lesson app's start-up checks (``vividly_tasks.worker.startup_checks``): a worker that
cannot do the work refuses to start, before it takes a message, and says why.

A worker's missing tool or setting is never a request's failure: the request stays queued for
a worker that has what it needs. The checks import the pipeline's services when they run, at
a worker's start: building the app (``celery -A vividly_tasks call ...``) does not pay for them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.exceptions import ImproperlyConfigured

from vividly_tasks.lessons.settings import Settings, mask_urls_in
from vividly_tasks.worker import plain_message_tasks
from vividly_tasks.worker.startup_checks import StartupRefused, startup_check

logger = logging.getLogger(__name__)


def check_tools(app: Any, worker: Any) -> None:
    """A program, a project or credentials the configuration needs."""
    from vividly_tasks.lessons.services import missing_configuration, missing_tools  # noqa: PLC0415

    settings: Settings = app.settings
    reasons = []
    if missing := missing_tools(settings):
        reasons.append(f"not on PATH: {', '.join(missing)}")
    if missing := missing_configuration(settings):
        reasons.append(f"missing: {'; '.join(missing)}")
    if reasons:
        raise StartupRefused("; ".join(reasons), os.EX_CONFIG)


def prepare_content(app: Any, worker: Any) -> None:
    """Before the pool forks: bring the content schema up to date and open the artifact
    storage once, so a database it cannot reach or a storage URL it cannot use stops it
    there, with the reason, rather than fail every task."""
    import sqlalchemy.exc  # noqa: PLC0415

    from vividly_tasks.lessons.errors import TransientError  # noqa: PLC0415
    from vividly_tasks.lessons.services import migrate  # noqa: PLC0415
    from vividly_tasks.lessons.storage import LocalStorage, open_storage  # noqa: PLC0415

    settings: Settings = app.settings
    try:
        migrate(settings)
        storage = open_storage(settings.effective_storage_url)
        if isinstance(storage, LocalStorage):
            storage.sweep_temporaries()  # what workers killed mid-copy left
    except Exception as exc:
        unreachable = isinstance(exc, (TransientError, OSError, sqlalchemy.exc.OperationalError))
        reason = mask_urls_in(
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}", settings
        )
        raise StartupRefused(f"content database or storage unusable: {reason}",
                             os.EX_UNAVAILABLE if unreachable else os.EX_CONFIG) from None
    logger.info("content database migrated; storage %s", settings.effective_storage_url)


def check_plain_message_bindings(app: Any, worker: Any) -> None:
    """A queue bound to a task this worker lacks would dead-letter every message."""
    try:
        plain_message_tasks.check_bindings(app.settings.plain_message_tasks, app.tasks)
    except ImproperlyConfigured as exc:
        raise StartupRefused(str(exc), os.EX_CONFIG) from None


def register(app: Any) -> None:
    """The lesson app's checks, in the order they run."""
    for check in (check_tools, prepare_content, check_plain_message_bindings):
        startup_check(app, check)
