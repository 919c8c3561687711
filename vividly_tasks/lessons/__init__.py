"""The lesson workload: the adapter's first user, an app like any other built on it.

Requests and their status machine, lesson generation (offline or Gemini), narration, slides and
video, storage, the Celery tasks (``tasks``) and the app that runs them (``product``), and the
``vividly submit|resubmit|status|course|demo`` commands. Everything here may import the adapter
(``vividly_tasks.transport``, ``worker``, ``cli``); nothing of the adapter imports this package
(tests/repository/test_layout.py checks it). Installed by the ``lessons`` extra:
``pip install 'vividly-tasks[lessons]'``.
"""

from __future__ import annotations

from vividly_tasks.extras import require_extra

require_extra(
    "lessons", "the lesson workload",
    ("sqlalchemy", "alembic", "pydantic", "PIL", "google.genai", "google.cloud.storage",
     "google.cloud.texttospeech"),
)
