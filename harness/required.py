"""A service the tests need: skipped with the reason when it cannot start here, except when
``CI`` is set: then the run fails, so a green CI always means the real services were exercised."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest

from harness.services import ServiceUnavailable

T = TypeVar("T")


def require_service(start: Callable[[], T]) -> T:
    try:
        return start()
    except ServiceUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"required service missing in CI: {exc}", pytrace=False)
        pytest.skip(f"service unavailable: {exc}")
