"""API keys a worker verified a moment ago, so that most requests skip the key's query.

Checking a key against the database was the largest single cost of a
decision (a query, an HMAC, and on PostgreSQL a round trip). A worker now
remembers each key it found valid for ``CONSENT_API_KEY_CACHE_MS`` (default
1000 ms, at most 1000, 0 turns this off) and asks the database again after
that. The bound on revocation is what makes this safe to ship:

- only keys found valid are remembered: an unknown, revoked, expired or
  wrong key is checked against the database on every request, so nothing an
  attacker sends can fill or poison the cache;
- an entry lives ``ttl`` from the moment *before* its verifying query began,
  so a revocation committed at instant T is seen by every worker's check
  that starts after T, and no worker accepts the key after ``T + ttl``;
- a key's own expiry (a rotation's grace period, ``expires_at``) is checked
  on every hit, to the instant;
- entries are found by a SHA-256 of the whole key: a wrong secret for a
  known prefix never matches, and the cache holds no key in clear.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from consent_service.services.clients import Principal

# Far more live keys than any deployment's partners hold; past it the cache
# starts over rather than grow (a few requests then ask the database again).
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    expires_at: datetime | None
    trusted_until: float  # time.monotonic()


class VerifiedKeys:
    """One worker's recently verified keys; thread-safe (gthread workers share it)."""

    def __init__(self, ttl_ms: int, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl_ms / 1000
        self._max_entries = max_entries
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    @staticmethod
    def clock() -> float:
        """Read this before the verifying query starts and pass it to ``remember``."""
        return time.monotonic()

    def principal(self, api_key: str, now: datetime) -> Principal | None:
        """The caller of a key verified less than ``ttl`` ago and not expired since; else None."""
        if not self.enabled:
            return None
        digest = _digest(api_key)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if time.monotonic() >= entry.trusted_until or (
            entry.expires_at is not None and entry.expires_at <= now
        ):
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry.principal

    def remember(
        self,
        api_key: str,
        principal: Principal,
        *,
        expires_at: datetime | None,
        checked_at: float,
    ) -> None:
        """Trust ``api_key`` until ``ttl`` after ``checked_at`` (when its query began)."""
        if not self.enabled:
            return
        entry = _Entry(principal, expires_at, checked_at + self.ttl)
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[_digest(api_key)] = entry


def _digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()
