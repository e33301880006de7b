"""Throw-away databases for the relay and latency benchmarks, migrated to head."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from consent_service.db.migrate import upgrade


def default_postgres_url() -> str | None:
    return os.environ.get("CONSENT_BENCH_POSTGRES_URL", os.environ.get("CONSENT_TEST_POSTGRES_URL"))


@contextmanager
def database_url(backend: str, workdir: Path, postgres_url: str | None, name: str) -> Iterator[str]:
    """A new, migrated database: a file in ``workdir``, or ``name`` on the PostgreSQL server."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / f'{name}.db'}"
        upgrade(url)
        yield url
        return
    if postgres_url is None:
        raise SystemExit("postgresql needs --postgres-url or CONSENT_BENCH_POSTGRES_URL")
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
