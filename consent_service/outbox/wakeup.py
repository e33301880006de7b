"""How an idle relay learns that there is something to publish.

- PostgreSQL: a statement trigger on ``outbox_events`` (migration 0005) runs
  ``NOTIFY consent_outbox``; PostgreSQL delivers it when the writing
  transaction commits, and never for one that rolls back. The relay
  ``LISTEN``s on a connection of its own and wakes as soon as one arrives.
  It still goes round every ``fallback`` seconds without one, and polls at
  the short interval while the listening connection is away (it reconnects
  at the next wait), so a lost notification delays an event, never loses it.
- SQLite has no notifications: the relay polls at a short interval (an
  idle round is one indexed read that takes no lock).

Notifications that arrive while the relay is busy wait in the connection
and wake the next wait at once: a commit between a round's read and the
wait is not missed. ``LISTEN`` is issued before the first round.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from consent_service.db.session import Database

log = logging.getLogger(__name__)

CHANNEL = "consent_outbox"


class Wakeup(Protocol):
    def prepare(self) -> None:
        """Start listening (before the first round), where there is anything to listen to."""

    def wait(self, stop: threading.Event) -> None:
        """Return when there may be new rows, when ``stop`` is set, or after the fallback."""

    def close(self) -> None:
        """Release the listening connection."""


class Poll:
    """Waits a fixed short interval (SQLite, or PostgreSQL with notifications off)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def prepare(self) -> None:
        return

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.interval)

    def close(self) -> None:
        return


class PostgresNotifications:
    """``LISTEN consent_outbox`` on a dedicated connection, with a poll as fallback."""

    def __init__(self, database: Database, *, fallback: float, poll: float) -> None:
        self._database = database
        self._fallback = fallback
        self._poll = poll
        self._connection: Connection | None = None

    def prepare(self) -> None:
        if self._connection is not None:
            return
        try:
            connection = self._database.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        except SQLAlchemyError as error:
            log.warning("relay: cannot listen for outbox notifications: %s", type(error).__name__)
            return
        try:
            connection.execute(text(f"LISTEN {CHANNEL}"))
        except SQLAlchemyError as error:
            log.warning("relay: LISTEN failed: %s", type(error).__name__)
            connection.close()
            return
        self._connection = connection

    def wait(self, stop: threading.Event) -> None:
        self.prepare()
        if self._connection is None:
            stop.wait(self._poll)
            return
        driver: Any = self._connection.connection.driver_connection
        # The wait is bounded by the fallback, so ``stop`` is seen within it.
        try:
            for _ in driver.notifies(timeout=self._fallback, stop_after=1):
                break
            # Several commits may have notified: one round serves them all.
            for _ in driver.notifies(timeout=0):
                pass
        except psycopg.Error as error:
            log.warning(
                "relay: listening connection lost (%s); polling until it is back",
                type(error).__name__,
            )
            self._drop()
            stop.wait(self._poll)

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None


def wakeup_for(database: Database, *, poll: float, fallback: float) -> Wakeup:
    """Notifications on PostgreSQL, a short poll on SQLite."""
    if database.is_sqlite:
        return Poll(poll)
    return PostgresNotifications(database, fallback=fallback, poll=poll)
