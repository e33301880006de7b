"""One active relay at a time; the others wait as hot standbys.

Per-consent order on the topic needs a single publisher: two relays sending
the same rows would interleave versions. The lock is one the operating
system or the database releases by itself when its holder dies, so takeover
needs no timeout guess:

- PostgreSQL: a session-level advisory lock held on a dedicated connection.
  When the holder's process dies its connection closes and PostgreSQL frees
  the lock; a standby polling ``pg_try_advisory_lock`` gets it at its next
  try. The holder checks its connection at least every ``check_interval``
  seconds and steps down when the connection is lost (the lock went with it).
- SQLite: an exclusive ``flock`` on a file next to the database. The kernel
  releases it when the holder exits, however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from consent_service.db.session import Database

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x72656C61  # "rela": distinct from the sequencer's transaction lock


class Lease(Protocol):
    def try_acquire(self) -> bool:
        """Take the lease if free; True when this process holds it."""

    def is_held(self) -> bool:
        """Still ours? False once lost (connection gone); never blocks long."""

    def release(self) -> None:
        """Give the lease up so a standby takes over at once."""


class PostgresLease:
    """Session advisory lock on a connection kept for the lease's lifetime."""

    def __init__(self, database: Database, *, check_interval: float = 1.0) -> None:
        self._database = database
        self._check_interval = check_interval
        self._connection: Connection | None = None
        self._checked_at = 0.0

    def try_acquire(self) -> bool:
        if self._connection is not None:
            return self.is_held()
        try:
            connection = self._database.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            )
        except SQLAlchemyError as error:
            log.warning("relay lease: database unreachable: %s", type(error).__name__)
            return False
        try:
            acquired = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY}
                ).scalar()
            )
        except SQLAlchemyError as error:
            log.warning("relay lease: lock query failed: %s", type(error).__name__)
            acquired = False
        if not acquired:
            connection.close()
            return False
        self._connection = connection
        self._checked_at = time.monotonic()
        return True

    def is_held(self) -> bool:
        if self._connection is None:
            return False
        if time.monotonic() - self._checked_at < self._check_interval:
            return True
        try:
            self._connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            log.error("relay lease: lock connection lost; stepping down")
            self._drop()
            return False
        self._checked_at = time.monotonic()
        return True

    def release(self) -> None:
        if self._connection is None:
            return
        # Closing the connection below frees the lock even if this fails.
        with contextlib.suppress(SQLAlchemyError):
            self._connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK_KEY}
            )
        self._drop()

    def _drop(self) -> None:
        assert self._connection is not None
        # The connection may be broken: invalidate rather than return it to the pool.
        with contextlib.suppress(SQLAlchemyError):
            self._connection.invalidate()
            self._connection.close()
        self._connection = None


class FileLease:
    """An exclusive ``flock`` on ``<database file>.relay-lock``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def is_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ProcessLease:
    """For an in-memory SQLite database, which only this process can see."""

    def __init__(self) -> None:
        self._held = False

    def try_acquire(self) -> bool:
        self._held = True
        return True

    def is_held(self) -> bool:
        return self._held

    def release(self) -> None:
        self._held = False


def lease_for(database: Database) -> Lease:
    """The lease that fits the database behind ``database``."""
    if not database.is_sqlite:
        return PostgresLease(database)
    path = make_url(database.url).database
    if not path or path == ":memory:":
        return ProcessLease()
    return FileLease(Path(f"{path}.relay-lock"))
