"""Refused API keys, summed up in the audit log: one entry per source, reason and window.

An entry per refused request let anyone with a junk key make the service
write to its audit log as fast as it could send (1,000 requests, 1,000
rows). Refusals are instead counted per client address, reason (``missing``,
``malformed``, ``unknown``, ``bad-secret``, ``revoked``, ``expired``) and key
owner when the key named one, over a window of ``WINDOW_S`` seconds from the
first refusal; when the window ends, one entry records how many there were:

    action ``authentication``, outcome ``unauthorized``, status 401,
    objects ``{"key": reason, "address": ..., "count": n, "until": ...}``,
    at the time of the first refusal, with that request's id.

Refusals past the address's ``auth-failures`` rate limit (answered 429) are
counted in the same entry. The counts live in each process: with several
workers, an address refused by each of them in one window gets one entry
from each. A window's entry is handed to the audit batch writer by a timer
when the window ends, and at the latest when the process flushes its audit
entries at exit; a killed process (SIGKILL) loses its open windows.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from consent_service import audit
from consent_service.audit import writer as audit_writer
from consent_service.db.session import Database
from consent_service.timefmt import format_instant, utcnow

log = logging.getLogger(__name__)

WINDOW_S = 60.0
ACTION = "authentication"

Sink = Callable[[list[audit.Record]], None]


@dataclass(frozen=True)
class Source:
    """Who was refused and why: the key of one window's count."""

    address: str
    reason: str
    client_id: str | None = None
    organization: str | None = None


@dataclass
class _Window:
    started: datetime
    request_id: str | None
    count: int = 0


class RefusalTally:
    """Counts refusals per source; hands one entry per source and window to ``sink``."""

    def __init__(self, sink: Sink, window_s: float = WINDOW_S) -> None:
        self.pid = os.getpid()
        self._sink = sink
        self._window = timedelta(seconds=window_s)
        self._lock = threading.Lock()
        self._open: dict[Source, _Window] = {}
        self._timer: threading.Timer | None = None

    def count(self, source: Source, *, request_id: str | None, now: datetime) -> None:
        """Count one refusal of ``source`` at ``now``."""
        ended: _Window | None = None
        with self._lock:
            window = self._open.get(source)
            if window is not None and now >= window.started + self._window:
                ended = window = self._open.pop(source)
                window = None
            if window is None:
                window = self._open[source] = _Window(now, request_id)
            window.count += 1
            if self._timer is None:
                self._start_timer()
        if ended is not None:
            self._sink([self._entry(source, ended)])

    def flush(self, now: datetime | None = None) -> None:
        """Hand over the entries of windows ended by ``now``; of every window when None."""
        with self._lock:
            ended = {
                source: window
                for source, window in self._open.items()
                if now is None or now >= window.started + self._window
            }
            for source in ended:
                del self._open[source]
        if ended:
            self._sink([self._entry(source, window) for source, window in ended.items()])

    def stop(self) -> None:
        """Stop the timer: it holds the tally, and through its sink the database, for a window."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _start_timer(self) -> None:
        # The timer ends the windows that nothing else ends: an attack that
        # stopped still gets its entry at most two windows after it began.
        self._timer = threading.Timer(self._window.total_seconds(), self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        try:
            self.flush(utcnow())
        except Exception:  # A timer thread has nobody to raise to.
            log.exception("refused-key audit entries could not be handed over")
        with self._lock:
            self._timer = None
            if self._open:
                self._start_timer()

    def _entry(self, source: Source, window: _Window) -> audit.Record:
        return audit.Record(
            ACTION,
            "unauthorized",
            401,
            {
                "key": source.reason,
                "address": source.address,
                "count": window.count,
                "until": format_instant(window.started + self._window),
            },
            client_id=source.client_id,
            organization=source.organization,
            request_id=window.request_id,
            occurred_at=window.started,
        )


def tally(database: Database, sink: Sink) -> RefusalTally:
    """This process's tally of ``database``'s refusals (a forked child makes its own)."""
    found = _TALLIES.get(database)
    if found is None or found.pid != os.getpid():
        with _TALLIES_LOCK:
            found = _TALLIES.get(database)
            if found is None or found.pid != os.getpid():
                found = RefusalTally(sink)
                _TALLIES[database] = found
    return found


def release(database: Database) -> None:
    """Hand over ``database``'s open windows and stop its timer (an app ending early)."""
    with _TALLIES_LOCK:
        found = _TALLIES.pop(database, None)
    if found is not None:
        found.flush()
        found.stop()


def flush_all() -> None:
    """Hand over every open window of this process (before the audit writers flush)."""
    with _TALLIES_LOCK:
        tallies = [found for found in _TALLIES.values() if found.pid == os.getpid()]
    for found in tallies:
        found.flush()


_TALLIES: weakref.WeakKeyDictionary[Database, RefusalTally] = weakref.WeakKeyDictionary()
_TALLIES_LOCK = threading.Lock()
audit_writer.before_flush(flush_all)
