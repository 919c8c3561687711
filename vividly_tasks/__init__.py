"""vividly-tasks: lesson content generation as Celery tasks over Google Cloud Pub/Sub.

``celery -A vividly_tasks ...`` finds ``app`` here. Building it reads no environment: the
settings are read on first use of ``app.conf``.
"""

from __future__ import annotations

from vividly_tasks.app import create_app

app = create_app()

__all__ = ["app", "create_app"]
