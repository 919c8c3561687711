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

from vividly_tasks.extras import require_extra

require_extra(
    "dispatch", "the dispatcher",
    ("sqlalchemy", "alembic", "google.cloud.monitoring_v3", "google.cloud.run_v2",
     "requests", "cachecontrol"),
)
