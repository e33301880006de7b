"""Emergency accesses ("break the glass") in the local store, as the service announces them.

A ``consent.emergency-access`` event carries the whole state of one access:
version 1 when it opens, version 2 when it ends or expires. Each version
replaces what the store holds, so a version 2 that arrives first is applied
at once (it says all there is to know), and a late version 1 changes nothing.

While an access is open at an instant (opened at or before it, not closed,
before ``expires_at``), the view answers permit with reason
``emergency-access`` for its patient and practitioner, even over a deny, as
the service does. An access stops at its ``expires_at`` even when its
``expired`` event has not arrived yet.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from consent_events.envelope import Event

EMERGENCY_ACCESS = "consent.emergency-access"
EMERGENCY_ACCESS_REASON = "emergency-access"

SCHEMA = """
CREATE TABLE IF NOT EXISTS emergency_accesses (
    access_id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    practitioner_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    closed_at TEXT,
    applied_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_emergency_pair ON emergency_accesses (patient_id, practitioner_id);
"""


def apply_access(db: sqlite3.Connection, event: Event, now: float) -> str:
    """Store the access ``event`` describes; "applied", "duplicate" or "stale"."""
    row = db.execute(
        "SELECT version, event_id FROM emergency_accesses WHERE access_id = ?",
        (event.consent_id,),
    ).fetchone()
    if row is not None and row[1] == event.event_id:
        return "duplicate"
    if row is not None and event.version <= int(row[0]):
        return "stale"
    data = event.data
    db.execute(
        "INSERT INTO emergency_accesses (access_id, organization, patient_id, practitioner_id,"
        " version, event_id, status, opened_at, expires_at, closed_at, applied_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (access_id) DO UPDATE SET"
        " version = excluded.version, event_id = excluded.event_id, status = excluded.status,"
        " closed_at = excluded.closed_at, applied_at = excluded.applied_at",
        (
            event.consent_id,
            event.organization,
            data["patient_id"],
            data["practitioner_id"],
            event.version,
            event.event_id,
            data["status"],
            data["opened_at"],
            data["expires_at"],
            data["closed_at"],
            now,
        ),
    )
    return "applied"


def open_access(
    db: sqlite3.Connection,
    patient_id: str,
    practitioner_id: str,
    organization: str | None,
    at: datetime,
) -> str | None:
    """The id of the pair's access open at ``at`` (the latest opened), or None."""
    query = (
        "SELECT access_id, opened_at, expires_at, closed_at FROM emergency_accesses"
        " WHERE patient_id = ? AND practitioner_id = ?"
    )
    params = [patient_id, practitioner_id]
    if organization is not None:
        query += " AND organization = ?"
        params.append(organization)
    found: list[tuple[datetime, str]] = []
    for access_id, opened_at, expires_at, closed_at in db.execute(query, params):
        until = datetime.fromisoformat(expires_at)
        if closed_at is not None:
            until = min(until, datetime.fromisoformat(closed_at))
        opened = datetime.fromisoformat(opened_at)
        if opened <= at < until:
            found.append((opened, access_id))
    return max(found)[1] if found else None
