"""vividly-tasks: a Celery adapter for Google Cloud Pub/Sub, and lesson generation on it.

Importing this package (or any of its modules, ``vividly_tasks.transport`` above all) builds
nothing: the product app is built on first use of ``vividly_tasks.app``, which is what
``celery -A vividly_tasks ...`` reads. Pieces for any Celery app:

* ``import vividly_tasks.transport``: ``pubsub://`` URLs resolve to the Pub/Sub transport.
* ``vividly_tasks.worker.attach(app)``: the worker behaviours (guarded consumer, dead-letter
  reasons, idle-pool stop, structured logs), scoped to ``app``.
"""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vividly_tasks.lessons.product import VividlyCelery, create_app

__all__ = ["app", "create_app"]

_build_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``app`` (the product app, built once) and ``create_app``, on first use (PEP 562)."""
    if name == "create_app":
        from vividly_tasks.lessons.product import create_app  # noqa: PLC0415 - lazily

        return create_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _build_lock:
        built: VividlyCelery | None = globals().get("app")
        if built is None:
            from vividly_tasks.lessons.product import create_app  # noqa: PLC0415 - lazily

            built = create_app()
            globals()["app"] = built
            # Whoever asked for the product app runs its commands (`celery -A vividly_tasks
            # ...`): what exists now lives as long as the process, so it leaves the cyclic
            # collector's reach. Full collections and the exit stop walking it (0.2-0.4 s off
            # every such command), and prefork children stop writing to the pages they share
            # with the parent (Python's own advice before fork()).
            gc.freeze()
    return built
