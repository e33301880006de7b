"""Wait for a condition with a deadline, instead of sleeping a fixed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too
long everywhere else (a slow suite); polling the condition itself is neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "",
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Exceptions of the ``ignoring`` types count as "not yet" (a view still
    opening, a store locked for a moment). Raises AssertionError naming
    ``what`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignoring:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], bool], duration: float, interval: float = 0.05) -> bool:
    """True when ``predicate`` stays true for ``duration`` seconds (checked every interval).

    For the rare check that something does *not* happen: it returns False as
    soon as the predicate turns false, so a failure shows without waiting.
    """
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())
