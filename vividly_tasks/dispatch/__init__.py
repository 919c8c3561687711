"""``vividly dispatch``: start job executions when work arrives, sized to the backlog.

One module per role: ``inputs`` (what a decision looks at), ``decision`` (the pure rule),
``arrivals`` (wake-up push deliveries read as arrivals), ``record`` (the state shared by
dispatcher processes: arrivals seen and launches made, behind one lock), ``monitoring`` and
``cloud_run`` (the Google APIs, errors converted once), ``local_runner`` (``vividly-worker
job`` processes instead of Cloud Run executions), ``dispatcher`` (one decision end to end),
``push_auth`` (who may call the endpoint: the push subscription's OIDC token) and ``server``
(the HTTP endpoint of the push subscription, on ``vividly_tasks.http_server``); ``settings``
(``DISPATCH_*``) and ``schema`` (the record's tables and migrations). Installed by the ``dispatch``
extra.
"""

from __future__ import annotations

from importlib.util import find_spec

#: What the ``dispatch`` extra installs, by the module each package is imported as.
EXTRA_MODULES = ("sqlalchemy", "alembic", "google.cloud.monitoring_v3", "google.cloud.run_v2",
                 "requests", "cachecontrol")


def _missing_extra() -> list[str]:
    missing = []
    for name in EXTRA_MODULES:
        try:
            found = find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


if missing := _missing_extra():
    raise ImportError(
        "the dispatcher needs the dispatch extra: pip install 'vividly-tasks[dispatch]' "
        f"(missing: {', '.join(missing)})"
    )
