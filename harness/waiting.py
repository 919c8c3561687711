"""Waiting on a real process or service: poll until a check holds, or fail saying what for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], timeout: float, message: str = "the condition",
    interval: float = 0.05,
) -> T:
    """The first truthy value ``check`` returns, polled every ``interval`` seconds; an
    AssertionError naming ``message`` once ``timeout`` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(interval)
