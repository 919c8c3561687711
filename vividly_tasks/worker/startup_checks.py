"""Start-up checks: steps any app registers to refuse to start a worker, with the reason.

A check runs when a worker of its app has set up (Celery's ``celeryd_after_setup``), before
the pool forks and before any message is taken. It refuses by raising ``StartupRefused``
with the detail and the exit code (``os.EX_CONFIG``, 78, for a configuration the worker cannot
run with; ``os.EX_UNAVAILABLE``, 69, for a service it needs that does not answer). The worker
then exits with that code; ``vividly-worker`` reads the refusal (``refusal_of``) and puts the
detail in its summary line::

    from vividly_tasks.worker.startup_checks import StartupRefused, startup_check

    @startup_check(app)
    def database_reachable(app, worker):
        if not ping(app.conf.database_url):
            raise StartupRefused("database unreachable", os.EX_UNAVAILABLE)

Any other exception from a check refuses too, as a configuration error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from celery.signals import celeryd_after_setup

logger = logging.getLogger(__name__)

Check = Callable[[Any, Any], None]
#: Where an app keeps its checks and, once refused, its refusal.
CHECKS = "_vividly_startup_checks"
REFUSAL = "_vividly_startup_refusal"


class StartupRefused(Exception):
    """A start-up check's refusal: the worker exits with ``exit_code`` before taking work."""

    def __init__(self, detail: str, exit_code: int = os.EX_CONFIG) -> None:
        super().__init__(detail)
        self.detail = detail
        self.exit_code = exit_code


@dataclass(frozen=True)
class Refusal:
    detail: str
    exit_code: int


def startup_check(app: Any, check: Check | None = None) -> Any:
    """Register ``check(app, worker)`` to run at the start of every worker of ``app``; usable
    as a decorator. Checks run in the order registered; the first refusal stops the worker."""

    def register(function: Check) -> Check:
        checks: list[Check] | None = getattr(app, CHECKS, None)
        if checks is None:
            checks = []
            setattr(app, CHECKS, checks)
            celeryd_after_setup.connect(_run_checks, weak=False)
        checks.append(function)
        return function

    return register(check) if check is not None else register


def refusal_of(app: Any) -> Refusal | None:
    """Why a start-up check refused to run a worker of ``app``, if one did."""
    return getattr(app, REFUSAL, None)


def refuse(app: Any, detail: str, exit_code: int) -> NoReturn:
    """Stop the worker before it takes any work, saying why."""
    logger.critical("%s", detail)
    setattr(app, REFUSAL, Refusal(detail, exit_code))
    # Celery logs and carries on after a signal handler's exception, but not after this.
    raise SystemExit(exit_code)


def _run_checks(sender: Any = None, instance: Any = None, **_: Any) -> None:
    app = getattr(instance, "app", None)
    for check in list(getattr(app, CHECKS, None) or ()):
        try:
            check(app, instance)
        except StartupRefused as exc:
            refuse(app, exc.detail, exc.exit_code)
        except Exception as exc:
            refuse(app, f"start-up check {check.__name__} failed: {exc!r}", os.EX_CONFIG)
