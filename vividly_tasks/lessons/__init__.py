"""The lesson workload: the adapter's first user, an app like any other built on it.

Requests and their status machine, lesson generation (offline or Gemini), narration, slides and
video, storage, the Celery tasks (``tasks``) and the app that runs them (``product``), and the
``vividly submit|resubmit|status|demo`` commands. Everything here may import the adapter
(``vividly_tasks.transport``, ``worker``, ``cli``); nothing of the adapter imports this package
(tests/test_layout.py checks it). Installed by the ``lessons`` extra:
``pip install 'vividly-tasks[lessons]'``.
"""

from __future__ import annotations

from importlib.util import find_spec

#: What the ``lessons`` extra installs, by the module each package is imported as.
EXTRA_MODULES = ("sqlalchemy", "alembic", "pydantic", "PIL", "google.genai",
                 "google.cloud.storage", "google.cloud.texttospeech")


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
        "the lesson workload needs the lessons extra: pip install 'vividly-tasks[lessons]' "
        f"(missing: {', '.join(missing)})"
    )
