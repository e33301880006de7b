"""Tables of the consent core.

Integrity lives here, in constraints: a version number is unique per consent,
a consent's current version can only move by compare-and-set, an idempotency
key is unique per client, an outbox position is unique.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.db.base import Base, BigId, UTCDateTime


class ApiClient(Base):
    """A partner's credentials: an organization, its scopes and a hashed key."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Superseded by ``api_keys`` (migration 0004 copied them there); NULL for
    # new clients and dropped in a later release.
    key_prefix: Mapped[str | None] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsentState:
    """What a consent says at one version: the current row and every snapshot carry it."""

    organization: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(128))
    practitioner_id: Mapped[str] = mapped_column(String(128))
    categories: Mapped[list[str]] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    decision: Mapped[str] = mapped_column(String(8))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    collection_method: Mapped[str] = mapped_column(String(16))
    evidence_ref: Mapped[str | None] = mapped_column(String(256))
    policy_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The column names of ``ConsentState``, copied from the current row into each snapshot.
CONSENT_STATE_FIELDS = tuple(ConsentState.__annotations__)


class Consent(ConsentState, Base):
    """The current state of one consent; its history is in ``consent_versions``."""

    __tablename__ = "consents"
    __table_args__ = (
        CheckConstraint("decision IN ('permit', 'deny')", name="decision"),
        CheckConstraint("status IN ('active', 'revoked', 'expired')", name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("valid_until IS NULL OR valid_until > valid_from", name="validity"),
        Index("ix_consents_lookup", "organization", "patient_id", "practitioner_id"),
        Index("ix_consents_practitioner", "organization", "practitioner_id", "status"),
        Index("ix_consents_expiry", "status", "valid_until"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)


class ConsentVersion(ConsentState, Base):
    """An immutable snapshot of a consent after one change."""

    __tablename__ = "consent_versions"
    __table_args__ = (
        UniqueConstraint("consent_id", "version"),
        CheckConstraint("change IN ('granted', 'amended', 'revoked', 'expired')", name="change"),
        Index(
            "ix_consent_versions_lookup",
            "organization",
            "patient_id",
            "practitioner_id",
            "consent_id",
            "version",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"))
    change: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str] = mapped_column(String(160))
    reason: Mapped[str | None] = mapped_column(String(500))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxEvent(Base):
    """A CloudEvent waiting for (or done with) delivery to Kafka.

    ``payload`` is the serialised data, frozen at write time so that a re-send
    is byte-identical. ``position`` is NULL until the sequencer gives the row
    its place in the commit-safe order that readers and the relay follow.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index(
            "ix_outbox_events_unpositioned",
            "id",
            sqlite_where=text("position IS NULL"),
            postgresql_where=text("position IS NULL"),
        ),
        Index("ix_outbox_events_org_position", "organization", "position"),
        Index(
            "ix_outbox_events_pending",
            "position",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
        # The relay's short list of consents blocked behind a poison event.
        Index(
            "ix_outbox_events_held",
            "consent_id",
            sqlite_where=text("held_at IS NOT NULL"),
            postgresql_where=text("held_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    position: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    organization: Mapped[str] = mapped_column(String(64))
    consent_id: Mapped[str] = mapped_column(String(36))
    consent_version: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Delivery state kept by the relay: failed sends so far, the last error,
    # and when the row was set aside as poison (its consent waits behind it).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # True when the writer checked ``payload`` against its event schema before
    # staging the row: the relay then sends the bytes without parsing them.
    # Rows written before the check existed (false) are checked by the relay.
    validated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class IdempotencyRecord(Base):
    """The stored answer to a POST made with an ``Idempotency-Key``."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("client_id", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(36))
    key: Mapped[str] = mapped_column(String(255))
    method_path: Mapped[str] = mapped_column(String(512))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[Any] = mapped_column(JSON)
    response_headers: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Tables of the audit chain, API keys and rate counters (issue 5), of
# enforcement receipts (issue 15), and of emergency access (issue 16).
import consent_service.db.audit_models  # noqa: E402
import consent_service.db.emergency_models  # noqa: E402
import consent_service.db.receipt_models  # noqa: E402, F401

# The web form's tables live in their own module; importing it here registers
# them on Base.metadata wherever the core models are loaded.
from consent_service.db import request_models  # noqa: E402, F401
