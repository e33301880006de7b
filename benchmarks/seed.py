"""A benchmark database: migrated, bulk-seeded, and reset between write rounds.

The data looks like a practice's: one organization, a dozen practitioners,
patients with one to five consents each (three on average, each naming
another practitioner), a tenth of them revoked (two versions), a tenth
``deny``, a quarter with an end date; every version has its published
outbox event. Rows go in with Core ``executemany`` on SQLite and ``COPY``
on PostgreSQL, never through the API: a million consents take a minute or
two, not an hour.

Load generators read patients ``p-0000000`` ... and practitioner
``PRACTITIONERS[(i + r) % 12]``: for ``r`` in 0..3 about 70% of the
questions find a consent. Writes made by a benchmark use patient ids
starting with ``w-`` so that ``reset_writes`` can remove them through the
lookup index and the next round starts from the seeded size again.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON

from consent_service.config import DEFAULT_CATEGORIES, DEFAULT_PURPOSES
from consent_service.db.migrate import MIGRATIONS, upgrade
from consent_service.db.models import Consent, ConsentVersion, OutboxEvent
from consent_service.db.session import make_engine
from consent_service.services.clients import create_client
from consent_service.timefmt import format_instant, utcnow

ORGANIZATION = "org-bench"
PRACTITIONERS = tuple(f"rpps:1000{n:07d}" for n in range(12))
WRITE_PREFIX = "w-"
CHUNK = 20_000

_consents: Table = Consent.__table__
_versions: Table = ConsentVersion.__table__
_outbox: Table = OutboxEvent.__table__


def patient_id(index: int) -> str:
    return f"p-{index:07d}"


def patient_count(size: int) -> int:
    """How many patients hold ``size`` consents (patient i holds 1 + i % 5)."""
    total = patients = 0
    while total < size:
        total += 1 + patients % 5
        patients += 1
    return patients


def schema_fingerprint() -> str:
    """A short hash of the migration files.

    Databases are kept seeded between runs and named after this: a
    migration whose content changed under an unchanged revision id would
    otherwise go unnoticed by ``alembic upgrade`` on a kept database.
    """
    digest = hashlib.sha256()
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def sqlite_database_url(directory: Path, size: int) -> str:
    """The SQLite file for ``size`` under the current schema; older ones are removed."""
    name = f"bench-{size}-{schema_fingerprint()}.db"
    for stale in directory.glob(f"bench-{size}-*.db*"):
        if not stale.name.startswith(name):
            stale.unlink()
    return f"sqlite:///{directory / name}"


def postgres_database_url(base_url: str, size: int) -> str:
    """The database for ``size`` under the current schema on the server of ``base_url``.

    Created when missing; those of other schemas are dropped (a million
    consents take about a gigabyte).
    """
    name = f"consent_bench_{size}_{schema_fingerprint()}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        existing = connection.scalars(
            text("SELECT datname FROM pg_database WHERE datname LIKE :pattern"),
            {"pattern": f"consent\\_bench\\_{size}\\_%"},
        ).all()
        for stale in set(existing) - {name}:
            connection.execute(text(f'DROP DATABASE "{stale}" WITH (FORCE)'))
        if name not in existing:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def prepare(url: str, size: int, *, log: Any = print) -> None:
    """Migrate and seed ``url`` with ``size`` consents, unless it already holds exactly them."""
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            seeded = connection.scalar(select(func.count()).select_from(_consents))
        if seeded == size:
            reset_writes(engine)
            log(f"  {engine.dialect.name} {size:,}: already seeded")
            return
        started = time.perf_counter()
        _empty(engine)
        if engine.dialect.name == "postgresql":
            _copy_postgres(engine, size)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE"))
        else:
            _insert_sqlite(engine, size)
        log(f"  {engine.dialect.name} {size:,}: seeded in {time.perf_counter() - started:.0f} s")
    finally:
        engine.dispose()


def make_client(url: str) -> str:
    """A fresh API key of the benchmark organization with the scopes the load needs."""
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            _, api_key = create_client(
                session,
                organization=ORGANIZATION,
                scopes=["decisions:read", "consents:write", "consents:read"],
                name="benchmark",
                now=utcnow(),
            )
        return api_key
    finally:
        engine.dispose()


def reset_writes(engine: Engine) -> None:
    """Remove what write rounds added, so every round starts from the seeded size.

    Called once the load stopped; the short pause lets the servers finish
    the requests that were still in flight when wrk hung up.
    """
    time.sleep(0.5)
    upper = WRITE_PREFIX[:-1] + chr(ord(WRITE_PREFIX[-1]) + 1)
    with engine.begin() as connection:
        # Seeded events are positioned; only the benchmark's new ones are not.
        connection.execute(_outbox.delete().where(_outbox.c.position.is_(None)))
        for table in (_versions, _consents):
            connection.execute(
                table.delete().where(
                    table.c.organization == ORGANIZATION,
                    table.c.patient_id >= WRITE_PREFIX,
                    table.c.patient_id < upper,
                )
            )
    if engine.dialect.name == "sqlite":
        # Outside any transaction (the driver connection is in autocommit).
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()


def _empty(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in (_outbox, _versions, _consents):
            connection.execute(table.delete())


def _insert_sqlite(engine: Engine, size: int) -> None:
    # One transaction per chunk and a large page cache: one transaction for
    # everything spills the cache into the WAL over and over (gigabytes of
    # WAL, many minutes for a million consents).
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA cache_size=-262144")
        connection.commit()
        for consents, versions, events in _chunks(size):
            with connection.begin():
                connection.execute(_consents.insert(), consents)
                connection.execute(_versions.insert(), versions)
                connection.execute(_outbox.insert(), events)


def _copy_postgres(engine: Engine, size: int) -> None:
    tables = [(_consents, 0), (_versions, 1), (_outbox, 2)]
    with engine.begin() as connection:
        raw: Any = connection.connection.driver_connection
        with raw.cursor() as cursor:
            for chunk in _chunks(size):
                for table, index in tables:
                    rows = chunk[index]
                    columns = list(rows[0])
                    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
                    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
                    with cursor.copy(statement) as copy:
                        for row in rows:
                            copy.write_row(
                                [
                                    json.dumps(row[c]) if c in json_columns else row[c]
                                    for c in columns
                                ]
                            )
        for table in (_versions, _outbox):
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"(SELECT max(id) FROM {table.name}))"
                )
            )


def _chunks(size: int) -> Iterator[tuple[list[dict[str, Any]], ...]]:
    """(consents, versions, outbox events) in chunks of about ``CHUNK`` consents."""
    rng = random.Random(size)
    now = datetime.now(UTC).replace(microsecond=0)
    consents: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    made = index = sequence = 0
    while made < size:
        for offset in range(1 + index % 5):
            if made == size:
                break
            consent, history = _consent(rng, now, index, PRACTITIONERS[(index + offset) % 12])
            consents.append(consent)
            for version in history:
                sequence += 1
                version["id"] = sequence
                versions.append(version)
                events.append(_event(rng, version, position=sequence))
            made += 1
        index += 1
        if len(consents) >= CHUNK or made == size:
            yield consents, versions, events
            consents, versions, events = [], [], []


def _consent(
    rng: random.Random, now: datetime, index: int, practitioner: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    created = now - timedelta(seconds=rng.randrange(3 * 365 * 86400))
    revoked = rng.random() < 0.1
    consent: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "organization": ORGANIZATION,
        "patient_id": patient_id(index),
        "practitioner_id": practitioner,
        "categories": rng.sample(DEFAULT_CATEGORIES, rng.randint(1, 4)),
        "purposes": rng.sample(DEFAULT_PURPOSES, rng.randint(1, 2)),
        "decision": "deny" if rng.random() < 0.1 else "permit",
        "valid_from": created,
        "valid_until": created + timedelta(days=rng.randint(400, 2000))
        if rng.random() < 0.25
        else None,
        "collection_method": rng.choice(("paper", "web-form", "partner-api")),
        "evidence_ref": None,
        "policy_version": "2024-01",
        "status": "active",
        "version": 1,
        "created_at": created,
        "updated_at": created,
    }
    history = [{**consent, "change": "granted", "recorded_at": created}]
    if revoked:
        revoked_at = created + timedelta(seconds=rng.randrange(86400, 300 * 86400))
        consent.update(status="revoked", version=2, updated_at=revoked_at)
        history.append({**consent, "change": "revoked", "recorded_at": revoked_at})
    for version in history:
        version["consent_id"] = version.pop("id")
        version["actor"] = "client:seed"
        version["reason"] = None
    return consent, history


def _event(rng: random.Random, version: dict[str, Any], *, position: int) -> dict[str, Any]:
    snapshot = {
        **version,
        "id": version["consent_id"],
        "collection": {
            "method": version["collection_method"],
            "evidence_ref": None,
            "policy_version": version["policy_version"],
        },
    }
    for name in ("consent_id", "collection_method", "evidence_ref", "policy_version"):
        del snapshot[name]
    for name in ("valid_from", "valid_until", "created_at", "updated_at", "recorded_at"):
        snapshot[name] = format_instant(snapshot[name]) if snapshot[name] else None
    return {
        "id": position,
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "position": position,
        "organization": version["organization"],
        "consent_id": version["consent_id"],
        "consent_version": version["version"],
        "type": f"consent.{version['change']}",
        "time": version["recorded_at"],
        "payload": json.dumps(snapshot, separators=(",", ":")),
        "created_at": version["recorded_at"],
        "published_at": version["recorded_at"],
    }
