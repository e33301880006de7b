"""Rate limits per client and per route, counted where every worker and pod sees them.

``CONSENT_RATE_LIMITS``: ``off``, ``default``, or overrides such as
``decisions=200/second,writes=10/second`` for the route groups below (the
others keep their defaults). Each client gets its own budget on each route.

Storage (``CONSENT_RATE_LIMIT_STORAGE``): ``database`` (the default) counts
in the service's own database, so that no extra server is needed and the
limit holds across gunicorn workers and pods alike: an UNLOGGED table on
PostgreSQL (no write-ahead log, no flush at commit), a separate SQLite file
beside an SQLite database (so counting never queues behind a consent write).
Any ``limits`` storage URI also works, e.g. ``redis://host:6379`` or
``memcached://host:11211`` (with its client library installed), or
``memory://`` for one process only. Counting uses fixed windows: one upsert
per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Engine, Table, case, create_engine, event, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.schema import CreateTable

from consent_service.db.audit_models import RateLimitCounter

log = logging.getLogger(__name__)

# The app extension holding this app's ``RateLimits`` (None when ``off``).
RATE_LIMITS_EXTENSION = "consent_rate_limits"

# Route groups follow the scope a route requires; the patient form's link
# checks have no scope and count per client address under ``links``, and
# refused API keys count per client address under ``auth-failures``.
GROUP_OF_SCOPE = {
    "consents:read": "reads",
    "consents:write": "writes",
    "emergency:write": "writes",
    "decisions:read": "decisions",
    "events:read": "events",
    "events:ack": "events",
    "admin": "admin",
    "links": "links",
    "auth-failures": "auth-failures",
}
DEFAULT_LIMITS = {
    "reads": "1200/minute",
    "writes": "300/minute",
    "decisions": "6000/minute",
    "events": "600/minute",
    "admin": "120/minute",
    "links": "60/minute",
    "auth-failures": "30/minute",
}


def parse_rate_limits(value: str) -> dict[str, RateLimitItem] | None:
    """The limit of each route group, or None when limits are ``off``."""
    value = value.strip()
    if value == "off":
        return None
    specs = dict(DEFAULT_LIMITS)
    if value != "default":
        for part in value.split(","):
            group, sep, spec = part.partition("=")
            group = group.strip()
            if not sep or group not in DEFAULT_LIMITS:
                raise ValueError(
                    f"expected off, default or GROUP=LIMIT,... with GROUP among "
                    f"{', '.join(DEFAULT_LIMITS)}; got {part.strip()!r}"
                )
            specs[group] = spec.strip()
    items = {}
    for group, spec in specs.items():
        try:
            items[group] = parse(spec)
        except ValueError:
            raise ValueError(f"{group}: {spec!r} is not a limit such as 100/minute") from None
    return items


class DatabaseStorage(Storage):
    """A ``limits`` storage on a SQL table: one atomic upsert per hit."""

    STORAGE_SCHEME = ["consent-database"]
    _table = cast(Table, RateLimitCounter.__table__)

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        table = self._table
        upsert = self._insert(table).values(key=key, count=amount, expires_at=now + expiry)
        fresh = table.c.expires_at <= now
        statement = upsert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "count": case((fresh, literal(amount)), else_=table.c.count + amount),
                "expires_at": case((fresh, literal(now + expiry)), else_=table.c.expires_at),
            },
        ).returning(table.c.count)
        with self._engine.connect() as connection:
            count = connection.execute(statement).scalar_one()
            connection.commit()
        return int(count)

    def get(self, key: str) -> int:
        row = self._row(key)
        return 0 if row is None or row.expires_at <= time.time() else int(row.count)

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return time.time() if row is None else float(row.expires_at)

    def check(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._engine.begin() as connection:
            return int(connection.execute(self._table.delete()).rowcount)

    def clear(self, key: str) -> None:
        with self._engine.begin() as connection:
            connection.execute(self._table.delete().where(self._table.c.key == key))

    def _row(self, key: str) -> Any:
        with self._engine.connect() as connection:
            return connection.execute(
                select(self._table.c.count, self._table.c.expires_at).where(
                    self._table.c.key == key
                )
            ).first()


def counter_engine(database_url: str, main_engine: Engine) -> Engine:
    """Where the database storage counts (see the module docstring)."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        return main_engine.execution_options(isolation_level="AUTOCOMMIT")
    path = url.database
    if not path or path == ":memory:":
        raise ValueError("database rate-limit storage needs a file or PostgreSQL database")
    engine = _sqlite_counter_engine(path)
    _create_counter_table(engine)
    return engine


def prepare_counter_store(database_url: str, setting: str, storage_setting: str) -> None:
    """Create the SQLite counter file and its table once, before workers fork.

    Called by gunicorn's master (``gunicorn_conf.on_starting``): workers then
    find the table there at boot. On PostgreSQL the table comes with the
    migrations, and other storages need nothing.
    """
    url = make_url(database_url)
    if setting.strip() == "off" or storage_setting != "database":
        return
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    engine = _sqlite_counter_engine(url.database)
    try:
        _create_counter_table(engine)
    finally:
        engine.dispose()


def _sqlite_counter_engine(path: str) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}.ratelimits",
        connect_args={"timeout": 10, "check_same_thread": False, "isolation_level": None},
    )

    @event.listens_for(engine, "connect")
    def tune(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # Counters are disposable: losing the last ones in a power cut is harmless.
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()

    return engine


def _create_counter_table(engine: Engine) -> None:
    # One statement, CREATE TABLE IF NOT EXISTS: a check followed by a
    # create (checkfirst) lets two processes both see no table and both
    # create it, and the second fails.
    with engine.begin() as connection:
        connection.execute(CreateTable(cast(Table, RateLimitCounter.__table__), if_not_exists=True))


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    retry_after: int


class RateLimits:
    """The limits of one app: ``hit`` counts a request and says whether it may go on."""

    def __init__(self, items: Mapping[str, RateLimitItem], storage: Storage) -> None:
        self._items = dict(items)
        self._limiter = FixedWindowRateLimiter(storage)

    def hit(self, scope: str, client_id: str, route: str, cost: int = 1) -> Verdict:
        """Count ``cost`` requests of ``client_id`` on ``route``; fail open if storage is down.

        A refused hit gives its cost back: a batch larger than what is left
        of the budget is refused whole and leaves that budget to smaller
        requests. Failing open keeps the service answering while a shared
        counter store (redis, memcached) is away; the error is logged.
        """
        group = GROUP_OF_SCOPE.get(scope, "reads")
        item = self._items[group]
        try:
            if self._limiter.hit(item, client_id, route, cost=cost):
                return Verdict(True, item.amount, 0)
            self._limiter.storage.incr(
                item.key_for(client_id, route), item.get_expiry(), amount=-cost
            )
            reset = self._limiter.get_window_stats(item, client_id, route).reset_time
        except Exception as error:  # noqa: BLE001  (any storage failure: count nothing, go on)
            log.warning("rate-limit storage failed: %s", type(error).__name__)
            return Verdict(True, item.amount, 0)
        return Verdict(False, item.amount, max(1, int(reset - time.time() + 0.999)))


def build_rate_limits(
    setting: str, storage_setting: str, database_url: str, main_engine: Engine
) -> RateLimits | None:
    """The app's rate limits, or None when ``CONSENT_RATE_LIMITS=off``."""
    items = parse_rate_limits(setting)
    if items is None:
        return None
    if storage_setting == "database":
        storage: Storage = DatabaseStorage(counter_engine(database_url, main_engine))
    else:
        storage = cast(Storage, storage_from_string(storage_setting))
    return RateLimits(items, storage)
