"""The local consent store: every applied version, held-back versions, and the sync state.

SQLite in WAL mode with ``synchronous=FULL``, so that a batch is on disk
when :meth:`Store.apply` returns; the subscriber commits Kafka offsets only
after that. Readers in other processes (``ConsentView("view.db")``) see a
consistent snapshot while the subscriber writes.

Versions are applied strictly in order per consent. A duplicate event id or a
version not newer than the stored one changes nothing. A version that skips
one is *held*: kept aside, reported, and applied only once the missing
version arrives, because applying it would hide a change we never saw.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from consent_events import emergency
from consent_events.envelope import Event, InvalidEvent
from consent_events.rules import Version

_SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    practitioner_id TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_consents_pair ON consents (patient_id, practitioner_id);
CREATE TABLE IF NOT EXISTS consent_versions (
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT NOT NULL,
    categories TEXT NOT NULL,
    purposes TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_until TEXT,
    recorded_at TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (consent_id, version)
);
CREATE TABLE IF NOT EXISTS held_events (
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    practitioner_id TEXT NOT NULL,
    event TEXT NOT NULL,
    held_at REAL NOT NULL,
    PRIMARY KEY (consent_id, version)
);
CREATE INDEX IF NOT EXISTS ix_held_pair ON held_events (patient_id, practitioner_id);
CREATE TABLE IF NOT EXISTS rejected_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT,
    consent_id TEXT,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_rejected_consent ON rejected_events (consent_id);
CREATE TABLE IF NOT EXISTS sync_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_acks (
    event_id TEXT PRIMARY KEY,
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL
);
"""

APPLIED = "applied"
DUPLICATE = "duplicate"
STALE = "stale"
HELD = "held"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Change:
    """What applying one event did; ``APPLIED`` changes are the only ones that alter answers.

    An emergency access's change (``is_consent`` false) names the access, and
    is not acknowledged: the service's receipts are about consents.
    """

    outcome: str
    event_id: str | None
    consent_id: str | None
    version: int | None
    reason: str | None = None
    is_consent: bool = True


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event that failed validation, with where it came from (``topic/partition@offset``)."""

    error: InvalidEvent
    origin: str


@dataclass(frozen=True, slots=True)
class SyncState:
    """How current the store is, as last written by its subscriber.

    ``group_id`` is the consumer group whose committed offsets match this
    store; a store that does not record the group it is started with must
    replay from the start, whatever the group has committed.
    ``current_as_of`` is the wall-clock instant (epoch seconds) at which the
    subscriber last saw no backlog: every event published before it is
    applied. ``lag_events`` is the backlog the subscriber knew of at its last
    write. ``heartbeat_at`` is that last write.
    """

    current_as_of: float | None
    lag_events: int
    heartbeat_at: float | None
    feed_after: int | None
    group_id: str | None


@dataclass(frozen=True, slots=True)
class Gap:
    """A consent whose newer versions are held back until a missing one arrives."""

    consent_id: str
    stored_version: int
    held_versions: tuple[int, ...]


class Store:
    """One SQLite connection, shared under a lock by the threads of one process.

    ``":memory:"`` keeps everything in this process (tests, short-lived
    tools); a file path survives restarts and can be read from other
    processes while a subscriber writes it.
    """

    def __init__(self, path: str = ":memory:", *, queue_acks: bool = False):
        self.path = path
        # With ``queue_acks``, every applied version is also queued in
        # ``pending_acks``, in the same transaction, for ``consent_events.acks``.
        self.queue_acks = queue_acks
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 10000")
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        with self._transaction(write=True) as db:
            for statement in (_SCHEMA + emergency.SCHEMA).split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; ``write`` takes the write lock up front to avoid upgrade deadlocks."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # Writing -------------------------------------------------------------

    def apply(
        self,
        items: Iterable[Event | Rejection],
        *,
        lag_events: int | None = None,
        current_as_of: float | None = None,
        feed_after: int | None = None,
    ) -> list[Change]:
        """Apply a batch in one durable transaction, with the sync state it leaves behind."""
        changes: list[Change] = []
        now = time.time()
        with self._transaction(write=True) as db:
            for item in items:
                if isinstance(item, Rejection):
                    changes.append(_reject(db, item, now))
                else:
                    changes.extend(_apply_event(db, item, now))
            if self.queue_acks:
                db.executemany(
                    "INSERT OR IGNORE INTO pending_acks (event_id, consent_id, version, applied_at)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (change.event_id, change.consent_id, change.version, now)
                        for change in changes
                        if change.outcome == APPLIED and change.is_consent
                    ],
                )
            _write_state(
                db,
                now,
                lag_events=lag_events,
                current_as_of=current_as_of,
                feed_after=feed_after,
            )
        return changes

    def heartbeat(self, *, lag_events: int, current_as_of: float | None) -> None:
        """Record that the subscriber is alive and how far behind it is, without events."""
        with self._transaction(write=True) as db:
            _write_state(db, time.time(), lag_events=lag_events, current_as_of=current_as_of)

    def follow_group(self, group_id: str) -> None:
        """Record that the group's committed offsets now describe what this store holds."""
        with self._transaction(write=True) as db:
            db.execute(
                "INSERT INTO sync_state (name, value) VALUES ('group_id', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (json.dumps(group_id),),
            )

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction on the store's connection, for the kit's own modules (acks)."""
        with self._transaction(write=write) as db:
            yield db

    # Reading -------------------------------------------------------------

    def snapshot(
        self, patient_id: str, practitioner_id: str, organization: str | None = None
    ) -> tuple[list[list[Version]], list[str], SyncState]:
        """One consistent read: the pair's histories, its untrustworthy consents, the sync state.

        The second item lists consents of the pair with held-back versions or
        rejected events: answers about the pair cannot be trusted while any exist.
        """
        with self._transaction() as db:
            query = (
                "SELECT v.consent_id, v.version, v.status, v.decision, v.categories,"
                " v.purposes, v.valid_from, v.valid_until, v.recorded_at"
                " FROM consents c JOIN consent_versions v ON v.consent_id = c.consent_id"
                " WHERE c.patient_id = ? AND c.practitioner_id = ?"
            )
            params: list[str] = [patient_id, practitioner_id]
            if organization is not None:
                query += " AND c.organization = ?"
                params.append(organization)
            rows = db.execute(query + " ORDER BY v.consent_id, v.version", params).fetchall()
            suspect = db.execute(
                "SELECT consent_id FROM held_events WHERE patient_id = ? AND practitioner_id = ?"
                " UNION SELECT r.consent_id FROM rejected_events r"
                " JOIN consents c ON c.consent_id = r.consent_id"
                " WHERE c.patient_id = ? AND c.practitioner_id = ?",
                (patient_id, practitioner_id, patient_id, practitioner_id),
            ).fetchall()
            state = _read_state(db)
        histories: dict[str, list[Version]] = {}
        for row in rows:
            histories.setdefault(row[0], []).append(_version(row))
        return list(histories.values()), sorted(row[0] for row in suspect), state

    def emergency_access(
        self, patient_id: str, practitioner_id: str, organization: str | None, at: datetime
    ) -> str | None:
        """The id of the pair's emergency access open at ``at``, or None."""
        with self._transaction() as db:
            return emergency.open_access(db, patient_id, practitioner_id, organization, at)

    def state(self) -> SyncState:
        with self._transaction() as db:
            return _read_state(db)

    def gaps(self) -> list[Gap]:
        """Every consent with versions held back, and the version it is stuck at."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT h.consent_id, COALESCE(c.version, 0), group_concat(h.version)"
                " FROM held_events h LEFT JOIN consents c ON c.consent_id = h.consent_id"
                " GROUP BY h.consent_id ORDER BY h.consent_id"
            ).fetchall()
        return [
            Gap(row[0], row[1], tuple(sorted(int(v) for v in row[2].split(",")))) for row in rows
        ]

    def rejected(self) -> list[tuple[str | None, str | None, str, str]]:
        """Rejected events as (event id, consent id, origin, reason), oldest first."""
        with self._transaction() as db:
            return db.execute(
                "SELECT event_id, consent_id, origin, reason FROM rejected_events ORDER BY id"
            ).fetchall()

    def counts(self) -> dict[str, int]:
        """Sizes that an operator watches: consents, versions, held and rejected events."""
        with self._transaction() as db:
            return {
                table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 -- fixed table names
                for table in ("consents", "consent_versions", "held_events", "rejected_events")
            }

    def version_of(self, consent_id: str) -> int | None:
        """The latest applied version of one consent, or ``None`` if never seen."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT version FROM consents WHERE consent_id = ?", (consent_id,)
            ).fetchone()
        return None if row is None else int(row[0])


def _apply_event(db: sqlite3.Connection, event: Event, now: float) -> list[Change]:
    if event.type == emergency.EMERGENCY_ACCESS:
        outcome = emergency.apply_access(db, event, now)
        reason = f"emergency-access {event.data['change']}"
        return [Change(outcome, event.event_id, event.consent_id, event.version, reason, False)]
    seen = db.execute(
        "SELECT 1 FROM consent_versions WHERE event_id = ?"
        " UNION ALL SELECT 1 FROM held_events WHERE event_id = ?",
        (event.event_id, event.event_id),
    ).fetchone()
    if seen:
        return [Change(DUPLICATE, event.event_id, event.consent_id, event.version)]
    row = db.execute(
        "SELECT version FROM consents WHERE consent_id = ?", (event.consent_id,)
    ).fetchone()
    stored = 0 if row is None else int(row[0])
    if event.version <= stored:
        return [Change(STALE, event.event_id, event.consent_id, event.version)]
    if event.version > stored + 1:
        db.execute(
            "INSERT OR IGNORE INTO held_events (consent_id, version, event_id, patient_id,"
            " practitioner_id, event, held_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.consent_id,
                event.version,
                event.event_id,
                event.data["patient_id"],
                event.data["practitioner_id"],
                _dump(event),
                now,
            ),
        )
        return [
            Change(HELD, event.event_id, event.consent_id, event.version, f"missing {stored + 1}")
        ]
    changes = [_insert_version(db, event, now)]
    # The missing version has arrived: release whatever was waiting behind it, in order.
    while True:
        held = db.execute(
            "SELECT event FROM held_events WHERE consent_id = ? AND version = ?",
            (event.consent_id, event.version + 1),
        ).fetchone()
        if held is None:
            return changes
        event = _load(held[0])
        db.execute(
            "DELETE FROM held_events WHERE consent_id = ? AND version = ?",
            (event.consent_id, event.version),
        )
        changes.append(_insert_version(db, event, now))


def _insert_version(db: sqlite3.Connection, event: Event, now: float) -> Change:
    data = event.data
    db.execute(
        "INSERT INTO consent_versions (consent_id, version, event_id, change, status, decision,"
        " categories, purposes, valid_from, valid_until, recorded_at, applied_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            event.consent_id,
            event.version,
            event.event_id,
            data["change"],
            data["status"],
            data["decision"],
            json.dumps(list(data["categories"])),
            json.dumps(list(data["purposes"])),
            data["valid_from"],
            data["valid_until"],
            data["recorded_at"],
            now,
        ),
    )
    db.execute(
        "INSERT INTO consents (consent_id, organization, patient_id, practitioner_id, version)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (consent_id) DO UPDATE SET"
        " organization = excluded.organization, patient_id = excluded.patient_id,"
        " practitioner_id = excluded.practitioner_id, version = excluded.version",
        (
            event.consent_id,
            event.organization,
            data["patient_id"],
            data["practitioner_id"],
            event.version,
        ),
    )
    return Change(APPLIED, event.event_id, event.consent_id, event.version, data["change"])


def _reject(db: sqlite3.Connection, rejection: Rejection, now: float) -> Change:
    error = rejection.error
    db.execute(
        "INSERT INTO rejected_events (event_id, consent_id, origin, reason, rejected_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (error.event_id, error.consent_id, rejection.origin, error.reason, now),
    )
    return Change(REJECTED, error.event_id, error.consent_id, None, error.reason)


def _write_state(
    db: sqlite3.Connection,
    now: float,
    *,
    lag_events: int | None = None,
    current_as_of: float | None = None,
    feed_after: int | None = None,
) -> None:
    values = {"heartbeat_at": now}
    if lag_events is not None:
        values["lag_events"] = lag_events
    if current_as_of is not None:
        values["current_as_of"] = current_as_of
    if feed_after is not None:
        values["feed_after"] = feed_after
    db.executemany(
        "INSERT INTO sync_state (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [(name, json.dumps(value)) for name, value in values.items()],
    )


def _read_state(db: sqlite3.Connection) -> SyncState:
    values = {name: json.loads(value) for name, value in db.execute("SELECT * FROM sync_state")}
    return SyncState(
        current_as_of=values.get("current_as_of"),
        lag_events=int(values.get("lag_events", 0)),
        heartbeat_at=values.get("heartbeat_at"),
        feed_after=values.get("feed_after"),
        group_id=values.get("group_id"),
    )


def _version(row: Sequence[object]) -> Version:
    valid_until = row[7]
    return Version(
        consent_id=str(row[0]),
        version=int(row[1]),  # type: ignore[call-overload]
        status=str(row[2]),
        decision=str(row[3]),
        categories=tuple(json.loads(str(row[4]))),
        purposes=tuple(json.loads(str(row[5]))),
        valid_from=parse_instant(str(row[6])),
        valid_until=None if valid_until is None else parse_instant(str(valid_until)),
        recorded_at=parse_instant(str(row[8])),
    )


def parse_instant(text: str) -> datetime:
    """Parse the service's UTC timestamps (``YYYY-MM-DDTHH:MM:SS.ffffffZ``)."""
    return datetime.fromisoformat(text)


def _dump(event: Event) -> str:
    return json.dumps(
        {
            "id": event.event_id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "time": event.time,
            "data": dict(event.data),
        }
    )


def _load(text: str) -> Event:
    document = json.loads(text)
    return Event(
        event_id=document["id"],
        type=document["type"],
        source=document["source"],
        subject=document["subject"],
        time=document["time"],
        data=document["data"],
    )
