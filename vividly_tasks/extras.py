"""The optional parts' check for their extra: a clear ImportError naming what to install."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.util import find_spec


def require_extra(extra: str, what: str, modules: Iterable[str]) -> None:
    """Raise ImportError naming ``pip install 'vividly-tasks[extra]'`` if any of ``modules``
    (as imported: ``google.cloud.run_v2``) is missing; cheap, nothing is imported."""
    missing = [name for name in modules if not _importable(name)]
    if missing:
        raise ImportError(
            f"{what} needs the {extra} extra: pip install 'vividly-tasks[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False
