"""Stored answers for POSTs carrying an ``Idempotency-Key``.

The record is inserted in the same transaction as the change it answers, so
either both exist or neither; a concurrent duplicate loses on the unique
(client, key) constraint, and the caller then replays the stored answer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.db.models import IdempotencyRecord


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    request_hash: str
    method_path: str
    status_code: int
    body: Any
    headers: dict[str, str]


def request_fingerprint(method_path: str, body: Any) -> str:
    """A hash of the request that a replay must match exactly."""
    canonical = json.dumps([method_path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_answer(session: Session, *, client_id: str, key: str) -> StoredAnswer | None:
    """The answer stored for this client and key, if any."""
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.client_id == client_id, IdempotencyRecord.key == key
        )
    )
    if record is None:
        return None
    return StoredAnswer(
        record.request_hash,
        record.method_path,
        record.status_code,
        record.response_body,
        dict(record.response_headers),
    )


def store_answer(
    session: Session,
    *,
    client_id: str,
    key: str,
    method_path: str,
    request_hash: str,
    status_code: int,
    body: Any,
    headers: dict[str, str],
    now: datetime,
) -> None:
    """Stage the answer beside the change it belongs to."""
    session.add(
        IdempotencyRecord(
            client_id=client_id,
            key=key,
            method_path=method_path,
            request_hash=request_hash,
            status_code=status_code,
            response_body=body,
            response_headers=headers,
            created_at=now,
        )
    )
    session.flush()
