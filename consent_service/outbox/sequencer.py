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

from sqlalchemy import CursorResult, text
from sqlalchemy.orm import Session

SEQUENCER_LOCK_KEY = 0x636F6E73  # "cons": the advisory lock that serialises sequencers
BATCH = 1000

# One statement numbers the oldest unpositioned rows after the highest
# position: no round trip per row (the same text runs on PostgreSQL and on
# SQLite 3.33+, which has UPDATE ... FROM and window functions).
_ASSIGN = text(
    """
    UPDATE outbox_events AS o
    SET position = s.base + s.rank
    FROM (
        SELECT id,
               row_number() OVER (ORDER BY id) AS rank,
               (SELECT coalesce(max(position), 0) FROM outbox_events) AS base
        FROM outbox_events
        WHERE position IS NULL
        ORDER BY id
        LIMIT :limit
    ) AS s
    WHERE o.id = s.id
    """
)


def assign_positions(session: Session, *, limit: int = BATCH) -> int:
    """Position up to ``limit`` committed rows in id order; return how many.

    Takes a transaction-scoped lock (PostgreSQL advisory lock; on SQLite the
    write lock that ``BEGIN IMMEDIATE`` already holds).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK_KEY})
    result = session.execute(_ASSIGN, {"limit": limit})
    assert isinstance(result, CursorResult)
    return result.rowcount
