"""Signed checkpoints of every chain's head, and purging old entries behind one.

A checkpoint records each chain's last (seq, hash) and is signed with the
audit key; ``verify`` checks that every recorded head is still present, so
removing the newest entries of a chain is detected. A purge deletes entries
older than a date and, in the same transaction, writes a purge checkpoint
recording where each chain resumes (its "floor").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, select
from sqlalchemy.orm import Session

from consent_service.audit.chain import canonical, keyring
from consent_service.db.audit_models import AuditCheckpoint, AuditEntry
from consent_service.timefmt import format_instant

_entries = cast(Table, AuditEntry.__table__)


def heads(connection: Connection | Session) -> dict[str, list[Any]]:
    """Every chain's last entry: ``{shard: [seq, hash]}``."""
    last = (
        select(_entries.c.shard, func.max(_entries.c.seq).label("seq"))
        .group_by(_entries.c.shard)
        .subquery()
    )
    rows = connection.execute(
        select(_entries.c.shard, _entries.c.seq, _entries.c.hash).join(
            last, (last.c.shard == _entries.c.shard) & (last.c.seq == _entries.c.seq)
        )
    )
    return {row.shard: [row.seq, row.hash] for row in rows}


def create_checkpoint(session: Session, *, now: datetime) -> dict[str, Any]:
    """Sign and store every chain's current head; return the exportable checkpoint."""
    return _store_checkpoint(session, kind="checkpoint", now=now, extra={})


def purge(session: Session, *, before: datetime, now: datetime) -> tuple[int, dict[str, Any]]:
    """Remove entries older than ``before`` behind a signed purge checkpoint.

    Per chain, everything up to its last entry older than ``before`` goes;
    the checkpoint records that entry's seq and hash (the "floor") so the
    remaining entries still link up. Delete and checkpoint commit together.
    """
    floors = dict(latest_floors(session))
    cut = (
        select(_entries.c.shard, func.max(_entries.c.seq).label("seq"))
        .where(_entries.c.occurred_at < before)
        .group_by(_entries.c.shard)
        .subquery()
    )
    rows = session.execute(
        select(_entries.c.shard, _entries.c.seq, _entries.c.hash).join(
            cut, (cut.c.shard == _entries.c.shard) & (cut.c.seq == _entries.c.seq)
        )
    ).all()
    removed = 0
    for row in rows:
        floors[row.shard] = [row.seq, row.hash]
        result = session.execute(
            delete(AuditEntry).where(AuditEntry.shard == row.shard, AuditEntry.seq <= row.seq)
        )
        removed += result.rowcount  # type: ignore[attr-defined]
    extra = {"before": format_instant(before), "floors": floors}
    checkpoint = _store_checkpoint(session, kind="purge", now=now, extra=extra)
    return removed, checkpoint


def _store_checkpoint(
    session: Session, *, kind: str, now: datetime, extra: Mapping[str, Any]
) -> dict[str, Any]:
    ring = keyring()
    previous = session.scalar(
        select(AuditCheckpoint.signature).order_by(AuditCheckpoint.id.desc()).limit(1)
    )
    body = canonical(
        {
            "kind": kind,
            "created_at": format_instant(now),
            "previous": previous,
            "heads": heads(session),
            **extra,
        }
    )
    signature = ring.sign(body.encode())
    session.add(
        AuditCheckpoint(
            created_at=now, kind=kind, body=body, key_id=ring.signing_id, signature=signature
        )
    )
    session.flush()
    return {"body": body, "key_id": ring.signing_id, "signature": signature}


def latest_floors(connection: Connection | Session) -> dict[str, list[Any]]:
    body = connection.execute(
        select(AuditCheckpoint.body)
        .where(AuditCheckpoint.kind == "purge")
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).scalar()
    if body is None:
        return {}
    floors: dict[str, list[Any]] = json.loads(body)["floors"]
    return floors
