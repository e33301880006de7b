"""Enforcement receipts: which version of a consent each subscriber has applied.

One row per (subscriber, consent). It only ever moves forward: an
acknowledgement of an older version than the recorded one changes nothing,
so acknowledgements may arrive duplicated or out of order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.db.base import Base, UTCDateTime


class SubscriberReceipt(Base):
    """The highest version of one consent that one subscriber said it applied."""

    __tablename__ = "subscriber_receipts"
    __table_args__ = (
        CheckConstraint("applied_version >= 1", name="applied_version_positive"),
        Index("ix_subscriber_receipts_consent", "consent_id"),
        Index("ix_subscriber_receipts_org_subscriber", "organization", "subscriber_id"),
    )

    subscriber_id: Mapped[str] = mapped_column(ForeignKey("api_clients.id"), primary_key=True)
    consent_id: Mapped[str] = mapped_column(ForeignKey("consents.id"), primary_key=True)
    organization: Mapped[str] = mapped_column(String(64))
    applied_version: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(36))
    # When the subscriber's software applied it (its clock, never later than
    # receipt), and when the service received the acknowledgement.
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime] = mapped_column(UTCDateTime)
