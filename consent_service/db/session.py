"""Engines and the one commit point.

Services add and flush; only ``Database.transaction()`` commits. SQLite gets
WAL, ``synchronous=FULL``, foreign keys and a busy timeout on every
connection; writers take the lock up front (``BEGIN IMMEDIATE``) so that two
writers queue instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 32_768
POSTGRES_CONNECT_TIMEOUT_S = 5
POSTGRES_STATEMENT_TIMEOUT_MS = 10_000
# A silent network path (a vanished host, a firewall dropping packets) is
# noticed after about 10 s: keepalive probes start after 5 s of silence and
# the kernel gives up on unanswered probes or unacknowledged data at 10 s.
# The worker then answers 503 instead of waiting until gunicorn kills it (30 s).
POSTGRES_SILENCE_LIMIT_MS = 10_000
# An idle connection older than this is pinged on checkout (a round trip);
# a younger one only has its socket looked at (no round trip).
POSTGRES_PING_AFTER_IDLE_S = 30.0


def make_engine(url: str, **overrides: Any) -> Engine:
    """An engine tuned for this service's backend."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **overrides,
        )
        _tune_sqlite(engine)
        return engine
    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        connect_args=postgres_connect_args(),
        **overrides,
    )
    if not overrides.get("pool_pre_ping"):
        _check_postgres_on_checkout(engine)
    return engine


def postgres_connect_args(*settings: str) -> dict[str, Any]:
    """libpq parameters every PostgreSQL connection of the service uses.

    ``settings`` are extra server settings (``name=value``) for the session.
    The statement timeout bounds work the server does; the keepalives and
    ``tcp_user_timeout`` bound a server that stops answering altogether.
    """
    options = " ".join(
        f"-c {setting}"
        for setting in (f"statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS}", *settings)
    )
    return {
        "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
        "options": options,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": POSTGRES_SILENCE_LIMIT_MS,
    }


def _check_postgres_on_checkout(engine: Engine) -> None:
    """Hand out live connections without a round trip per checkout.

    ``pool_pre_ping`` cost every request a ``SELECT 1`` round trip. A server
    that restarted, or a connection it terminated, leaves the client socket
    readable (the termination notice, then EOF) while the connection sits
    idle in the pool: a zero-timeout ``select`` sees that without asking the
    server. Only a connection idle for ``POSTGRES_PING_AFTER_IDLE_S`` (where
    a silent drop by a firewall becomes likely) is pinged for real. A dead
    connection raises ``DisconnectionError``, and the pool replaces it with
    a new one before the request sees it. A connection that dies in use
    fails its request (503), and SQLAlchemy then renews the whole pool.
    """

    @event.listens_for(engine, "checkin")
    def remember_idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def refuse_dead(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return  # just connected
        if connection.closed or connection.broken or _readable(connection.fileno()):
            raise exc.DisconnectionError("the server closed the connection while it was idle")
        if time.monotonic() - idle_since >= POSTGRES_PING_AFTER_IDLE_S:
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as error:  # any failure: a new connection
                raise exc.DisconnectionError(str(error)) from error


def _readable(fileno: int) -> bool:
    """True when an idle connection's socket has data or EOF waiting: the server left."""
    try:
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # SQLite's own page cache is 2 MB a connection by default: at a million
        # consents the indexes no longer fit and every lookup reads pages again.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """The engine and session factory of one database."""

    def __init__(self, url: str, **engine_overrides: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_overrides)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_only(self) -> Iterator[Connection]:
        """A connection for one read-only check.

        On PostgreSQL it runs in autocommit, which saves the BEGIN and COMMIT
        round trips; on SQLite a deferred transaction takes no write lock.
        """
        if self.is_sqlite:
            with self.engine.connect() as connection:
                connection = connection.execution_options(sqlite_begin="DEFERRED")
                with connection.begin():
                    yield connection
        else:
            with self.engine.connect() as connection:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only: it takes no write lock and commits nothing."""
        with self.read_only() as connection, Session(bind=connection) as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
