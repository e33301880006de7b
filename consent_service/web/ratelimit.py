"""A small per-client limit on attempts to verify links.

Signatures cannot be guessed, but every verification costs a database
lookup and an unthrottled endpoint invites scanning. This sliding window
lives in each worker's memory: with N workers a client gets at most N times
the limit, which is enough to stop a scan and never bothers a patient.
Disabled by ``CONSENT_RATE_LIMITS=off`` (as the benchmarks do).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

ATTEMPTS = 60
WINDOW_SECONDS = 60.0
MAX_TRACKED_CLIENTS = 10_000


class AttemptLimiter:
    """At most ``limit`` attempts per client in any ``window`` seconds."""

    def __init__(
        self,
        limit: int = ATTEMPTS,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Count one attempt of ``client``; False when it is over the limit."""
        now = self._clock()
        with self._lock:
            if len(self._attempts) >= MAX_TRACKED_CLIENTS:
                self._forget_idle(now)
            attempts = self._attempts.setdefault(client, deque())
            while attempts and attempts[0] <= now - self.window:
                attempts.popleft()
            if len(attempts) >= self.limit:
                return False
            attempts.append(now)
            return True

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client`` may try again."""
        with self._lock:
            attempts = self._attempts.get(client)
            if not attempts:
                return 0
            return max(1, int(attempts[0] + self.window - self._clock()) + 1)

    def _forget_idle(self, now: float) -> None:
        idle = [key for key, times in self._attempts.items() if times[-1] <= now - self.window]
        for key in idle:
            del self._attempts[key]
        if len(self._attempts) >= MAX_TRACKED_CLIENTS:
            # Under a flood of distinct addresses, forgetting is safer than
            # growing without bound; the signatures still hold.
            self._attempts.clear()
