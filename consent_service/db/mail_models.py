"""The mail queue: messages to patients, written in the transaction that asks for them.

One row per message (at most one invitation and one confirmation per consent
request). The patient's address is held only sealed (``mail.sealing``), on
the row that still has to reach it, and set to NULL once nothing more will
be sent to it. ``last_error`` keeps the class of the last failure, never a
server's reply (which may quote the address).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from consent_service.db.base import Base, BigId, UTCDateTime

KINDS = ("invitation", "confirmation")
STATUSES = ("queued", "sent", "failed")


class MailMessage(Base):
    """One message to the patient of a consent request, and how its delivery goes."""

    __tablename__ = "mail_messages"
    __table_args__ = (
        CheckConstraint("kind IN ('invitation', 'confirmation')", name="kind"),
        CheckConstraint("status IN ('queued', 'sent', 'failed')", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        UniqueConstraint("request_id", "kind"),
        Index("ix_mail_messages_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("consent_requests.id"))
    kind: Mapped[str] = mapped_column(String(12))
    sealed_address: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(8))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(64))
