"""Emergency access ("break the glass"): a practitioner's time-boxed access to one patient.

A row is opened once and closed once, ended by a caller or expired by the
expiry pass; ``version`` moves 1 → 2 by compare-and-set when it closes, so
of an end and an expiry racing, exactly one wins and writes its event.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.db.base import Base, UTCDateTime


class EmergencyAccess(Base):
    __tablename__ = "emergency_accesses"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'ended', 'expired')", name="status"),
        CheckConstraint("version IN (1, 2)", name="version"),
        CheckConstraint("expires_at > opened_at", name="window"),
        Index("ix_emergency_accesses_pair", "organization", "patient_id", "practitioner_id"),
        Index(
            "ix_emergency_accesses_open",
            "expires_at",
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(128))
    practitioner_id: Mapped[str] = mapped_column(String(128))
    justification: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(8))
    version: Mapped[int] = mapped_column(Integer)
    opened_by: Mapped[str] = mapped_column(String(160))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When it stopped (ended by a caller or at ``expires_at`` by the expiry pass), and by whom.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_by: Mapped[str | None] = mapped_column(String(160))
