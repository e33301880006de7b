"""Enforcement receipts: tell consent-service which changes this store has applied.

The store queues an acknowledgement in ``pending_acks`` in the same SQLite
transaction that applies a change (``Store(queue_acks=True)``), so an ack is
never lost and never sent for a change that was not durably applied. An
``AckSender`` thread reads the queue, posts batches to
``POST {base_url}/v1/subscribers/acks`` and deletes what the service took.
Applying never waits for it: when the service is slow or unreachable the
queue grows, is kept across restarts, and drains later with backoff.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from consent_events.store import Store

logger = logging.getLogger(__name__)

ACKS_PATH = "/v1/subscribers/acks"
MAX_BATCH = 500
# Refusals that no retry can change: the batch itself is wrong. Anything
# else (no network, 5xx, 401 while a key is being rotated, 429) is retried.
PERMANENT_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class PendingAck:
    event_id: str
    consent_id: str
    version: int
    applied_at: float

    def as_json(self) -> dict[str, object]:
        applied = datetime.fromtimestamp(self.applied_at, UTC)
        return {
            "event_id": self.event_id,
            "consent_id": self.consent_id,
            "version": self.version,
            "applied_at": applied.isoformat().replace("+00:00", "Z"),
        }


def pending(store: Store, limit: int = MAX_BATCH) -> list[PendingAck]:
    """The oldest queued acknowledgements."""
    with store.transaction() as db:
        rows = db.execute(
            "SELECT event_id, consent_id, version, applied_at FROM pending_acks"
            " ORDER BY applied_at, event_id LIMIT ?",
            (limit,),
        ).fetchall()
    return [PendingAck(str(r[0]), str(r[1]), int(r[2]), float(r[3])) for r in rows]


def forget(store: Store, acks: list[PendingAck]) -> None:
    """Delete acknowledgements the service has answered for."""
    with store.transaction(write=True) as db:
        db.executemany(
            "DELETE FROM pending_acks WHERE event_id = ?", [(ack.event_id,) for ack in acks]
        )


def queue_current_versions(store: Store, now: float) -> int:
    """Queue an ack of every consent's current version, once per store.

    A store that applied changes before acknowledging was turned on would
    otherwise never report them. Return how many were queued.
    """
    with store.transaction(write=True) as db:
        done = db.execute("SELECT 1 FROM sync_state WHERE name = 'acks_backfilled'").fetchone()
        if done:
            return 0
        cursor = db.execute(
            "INSERT OR IGNORE INTO pending_acks (event_id, consent_id, version, applied_at)"
            " SELECT v.event_id, v.consent_id, v.version, v.applied_at FROM consents c"
            " JOIN consent_versions v ON v.consent_id = c.consent_id AND v.version = c.version"
        )
        db.execute("INSERT INTO sync_state (name, value) VALUES ('acks_backfilled', ?)", (now,))
        return cursor.rowcount


class AckRefused(RuntimeError):
    """The service refused a batch for good (it would refuse it again)."""


class AckSender:
    """A daemon thread that drains the store's ack queue to the service."""

    def __init__(
        self,
        store: Store,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        idle_wait: float = 0.5,
        min_backoff: float = 0.5,
        max_backoff: float = 60.0,
    ):
        self.store = store
        self.url = base_url.rstrip("/") + ACKS_PATH
        self.api_key = api_key
        self.timeout = timeout
        self.idle_wait = idle_wait
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consent-acks", daemon=True)
        self._failures = 0

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Something was queued: send now rather than at the next idle check."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued if the service answers within ``timeout``; keep the rest."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def send_once(self) -> int:
        """Post one batch of queued acks; return how many the service answered for."""
        batch = pending(self.store)
        if not batch:
            return 0
        try:
            answer = self._post([ack.as_json() for ack in batch])
        except AckRefused as error:
            # Retrying cannot help; keeping the batch would block every later ack.
            logger.error("acks refused for good, dropping %d: %s", len(batch), error)
            forget(self.store, batch)
            return len(batch)
        if answer.get("refused"):
            logger.warning("service refused %s of %d acks", answer["refused"], len(batch))
        forget(self.store, batch)
        return len(batch)

    def _run(self) -> None:
        while True:
            try:
                sent = self.send_once()
                self._failures = 0
            except (OSError, sqlite3.Error) as error:
                # sqlite3.Error: the store stayed locked past its busy timeout.
                self._failures += 1
                delay = self._backoff()
                logger.warning("acks not sent (%s); retrying in %.1f s", error, delay)
                if self._stop.wait(delay):
                    return
                continue
            if sent:
                continue
            if self._stop.is_set():
                return
            self._wake.wait(self.idle_wait)
            self._wake.clear()

    def _backoff(self) -> float:
        ceiling = min(self.max_backoff, self.min_backoff * 2 ** min(self._failures - 1, 16))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 -- jitter, not secrecy

    def _post(self, acks: list[dict[str, object]]) -> dict[str, object]:
        request = urllib.request.Request(  # noqa: S310 -- the operator configures an http(s) URL
            self.url,
            data=json.dumps({"acks": acks}).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = json.load(response)
        except urllib.error.HTTPError as error:
            if error.code in PERMANENT_STATUSES:
                raise AckRefused(f"{ACKS_PATH} answered {error.code}") from None
            raise OSError(f"{ACKS_PATH} answered {error.code}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise OSError(f"{ACKS_PATH} answered something other than JSON: {error}") from None
        return body if isinstance(body, dict) else {}
