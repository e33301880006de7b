"""Engines and the one commit point.

Services add and flush; only ``Database.transaction()`` commits. SQLite gets
WAL, ``synchronous=FULL``, foreign keys and a busy timeout on every
connection; writers take the lock up front (``BEGIN IMMEDIATE``) so that two
writers queue instead of failing half-way with "database is locked".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_CONNECT_TIMEOUT_S = 5
POSTGRES_STATEMENT_TIMEOUT_MS = 10_000


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
    options = f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS}"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S, "options": options},
        **overrides,
    )


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
