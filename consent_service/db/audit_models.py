"""Tables of issue 5: the audit chain, its signed checkpoints, API keys, rate counters.

The audit log is append-only by contract and tamper-evident by construction:
every entry carries the HMAC of its content and of its predecessor's HMAC in
the same chain (``shard``), so that an edit, a removal, an insertion or a swap
breaks a link that only the holder of the audit key could re-forge.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.db.base import Base, BigId, UTCDateTime


class AuditEntry(Base):
    """One audited action: who, what, when, outcome; ids only, never health data."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        UniqueConstraint("shard", "seq"),
        Index("ix_audit_entries_occurred_at", "occurred_at"),
        Index("ix_audit_entries_org_occurred_at", "organization", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    shard: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(36))
    organization: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48))
    outcome: Mapped[str] = mapped_column(String(24))
    status: Mapped[int | None] = mapped_column(Integer)
    # Canonical JSON of the object ids, hashed byte for byte.
    objects: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement of every chain's head at one instant.

    ``body`` is the canonical JSON that ``signature`` signs; it names the
    previous checkpoint's signature, so checkpoints form a chain too. A purge
    checkpoint also records where each chain resumes after the removed entries.
    """

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(64))


class ApiKey(Base):
    """One key of an API client; a client holds at most two live keys (rotation).

    ``key_hash`` is ``<pepper id>$<HMAC-SHA256 hex>`` of the secret part, so a
    database dump alone does not let anyone test guesses offline.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(96))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RateLimitCounter(Base):
    """A fixed-window request counter shared by every worker and pod.

    Created UNLOGGED on PostgreSQL by migration 0004: counters are disposable,
    so their updates skip the write-ahead log and its flush at commit.
    """

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)
