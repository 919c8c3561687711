"""vividly-tasks: lesson content generation as Celery tasks over Google Cloud Pub/Sub.

``celery -A vividly_tasks ...`` finds ``app`` here. Building it reads no environment: the
settings are read on first use of ``app.conf``.
"""

from __future__ import annotations

import gc

from vividly_tasks.app import create_app

app = create_app()

# What exists now (modules, classes, Celery's, Kombu's and gRPC's tables) lives as long as the
# process, so it leaves the cyclic collector's reach: full collections and the interpreter's
# exit stop walking it, which takes 0.2-0.4 s off every `celery -A vividly_tasks ...` command,
# and prefork children stop writing to the pages they share with the parent when they collect
# (Python's own advice before fork()). Import leaves a few dozen cyclic objects at most.
gc.freeze()

__all__ = ["app", "create_app"]
