"""The one poll loop of the integration tests: wait for a condition on a real part (broker, engine process,
DuckDB file, HTTP server) with a deadline, and say what did not happen. Unit tests use ManualClock instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout_s: float = 20.0, what: str = "condition", *,
               interval_s: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Return pred()'s first truthy value; AssertionError naming `what` after `timeout_s`.

    `ignore`: exceptions of pred that mean "not yet" (a server still starting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            v = pred()
        except ignore:
            v = None  # type: ignore[assignment]
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
