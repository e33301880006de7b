"""Tables of the patient web form: consent requests and versioned consent texts.

A request moves out of ``pending`` exactly once, by a conditional UPDATE, so
a replayed or concurrent answer finds nothing to change. Consent texts are
immutable rows, one per (version, language), each with the SHA-256 of what
the patient reads; a consent granted through the form pins all three.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.db.base import Base, BigId, UTCDateTime


class ConsentRequest(Base):
    """A practice asks one patient, through a signed link, for one consent."""

    __tablename__ = "consent_requests"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'granted', 'refused', 'expired', 'locked')", name="status"
        ),
        CheckConstraint("language IN ('fr', 'en')", name="language"),
        CheckConstraint("valid_until IS NULL OR valid_for_days IS NULL", name="one_duration"),
        Index("ix_consent_requests_expiry", "status", "expires_at"),
        Index("ix_consent_requests_practitioner", "organization", "practitioner_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization: Mapped[str] = mapped_column(String(64))
    organization_name: Mapped[str | None] = mapped_column(String(128))
    requested_by: Mapped[str] = mapped_column(String(160))
    patient_id: Mapped[str] = mapped_column(String(128))
    practitioner_id: Mapped[str] = mapped_column(String(128))
    practitioner_name: Mapped[str] = mapped_column(String(128))
    practitioner_profession: Mapped[str | None] = mapped_column(String(128))
    categories: Mapped[list[str]] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_for_days: Mapped[int | None] = mapped_column(Integer)
    language: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_id: Mapped[str | None] = mapped_column(ForeignKey("consents.id"))
    # The consent text the patient answered, for refusals as much as grants.
    text_version: Mapped[str | None] = mapped_column(String(32))
    text_language: Mapped[str | None] = mapped_column(String(2))
    text_sha256: Mapped[str | None] = mapped_column(String(64))
    # A code handed to the patient by another channel (``services.verification``):
    # its keyed hash, the wrong tries so far (5 lock the request), when it was checked.
    verification_code_hash: Mapped[str | None] = mapped_column(String(64))
    verification_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    verification_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PolicyText(Base):
    """One immutable version of the consent text in one language."""

    __tablename__ = "policy_texts"
    __table_args__ = (
        UniqueConstraint("version", "language"),
        CheckConstraint("language IN ('fr', 'en')", name="language"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(2))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
