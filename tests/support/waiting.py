"""Polling with a deadline: a guard against hangs in tests, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], what: Callable[[], str] | str, timeout: float = 30.0, interval: float = 0.1
) -> T:
    """Poll until ``predicate()`` is truthy and return it; fail, saying what was awaited, after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)
