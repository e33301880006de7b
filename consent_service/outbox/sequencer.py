"""Gives committed outbox rows their place in a commit-safe order.

On PostgreSQL, ids come from a sequence at insert time, so a transaction that
commits late can leave a row with a lower id than rows already read: a
reader resuming "after id N" would skip it forever. Instead, rows get a
``position`` only once they are visible (committed), under a lock so that one
sequencer runs at a time, and readers page by position. A later version of a
consent is inserted only after the earlier one committed, so positions keep
each consent's versions in order.
"""

from __future__ import annotations

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from consent_service.db.models import OutboxEvent

SEQUENCER_LOCK_KEY = 0x636F6E73  # "cons": the advisory lock that serialises sequencers
BATCH = 1000


def assign_positions(session: Session, *, limit: int = BATCH) -> int:
    """Position up to ``limit`` committed rows in id order; return how many.

    Takes a transaction-scoped lock (PostgreSQL advisory lock; on SQLite the
    write lock that ``BEGIN IMMEDIATE`` already holds).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK_KEY})
    ids = session.scalars(
        select(OutboxEvent.id)
        .where(OutboxEvent.position.is_(None))
        .order_by(OutboxEvent.id)
        .limit(limit)
    ).all()
    if not ids:
        return 0
    last = session.scalar(select(func.coalesce(func.max(OutboxEvent.position), 0))) or 0
    session.execute(
        update(OutboxEvent),
        [{"id": row_id, "position": last + offset} for offset, row_id in enumerate(ids, 1)],
    )
    return len(ids)
