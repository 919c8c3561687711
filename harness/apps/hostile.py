"""A team's own Celery app that opted in to compressed messages, for test_hostile_messages.py.

It reads the broker and result backend from Celery's own variables (CELERY_BROKER_URL,
CELERY_RESULT_BACKEND), as any app may, and runs the test tasks of harness.apps.worker_tasks.
"""

from __future__ import annotations

from celery import Celery

import vividly_tasks.transport  # noqa: F401  (registers pubsub://)
from vividly_tasks.worker import attach

QUEUE = "hostile"

app = Celery("hostile", include=["harness.apps.worker_tasks"])
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    # The consumer's opt-in: these are decoded, within the transport's receive limits.
    broker_transport_options={"accept_compression": "gzip,bzip2,xz"},
)
attach(app)
