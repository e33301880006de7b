"""Writing to the mail queue, in the transaction of the change that asks for a message.

A message queued here is sent later by the mailer (``mail.mailer``), never
in the request: a slow or absent SMTP server cannot hold up the API, and a
request that rolls back leaves no message behind. The address is sealed
before it reaches the session, bound to the consent request it serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consent_service.db.mail_models import MailMessage
from consent_service.mail.sealing import Sealer
from consent_service.timefmt import format_instant

INVITATION = "invitation"
CONFIRMATION = "confirmation"
# Why an invitation was never sent: the request was answered or closed first.
REQUEST_CLOSED = "RequestClosed"


def queue_invitation(
    session: Session, *, request_id: str, address: str, sealer: Sealer, now: datetime
) -> MailMessage:
    """Queue the message carrying the form link, due at once."""
    message = MailMessage(
        request_id=request_id,
        kind=INVITATION,
        sealed_address=sealer.seal(address, bound_to=request_id),
        status="queued",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(message)
    session.flush()
    return message


def queue_confirmation(session: Session, *, request_id: str, now: datetime) -> bool:
    """After the patient answered: queue the confirmation to the invitation's address.

    The sealed address moves from the invitation to the confirmation (it is
    bound to the request, not the row), so from now on only the message that
    still has to reach the patient holds it; an invitation not sent yet is
    not sent at all. False when the request was not mailed.
    """
    sealed = session.scalar(
        select(MailMessage.sealed_address).where(
            MailMessage.request_id == request_id,
            MailMessage.kind == INVITATION,
            MailMessage.sealed_address.is_not(None),
        )
    )
    if sealed is None:
        return False
    session.execute(
        update(MailMessage)
        .where(MailMessage.request_id == request_id, MailMessage.kind == INVITATION)
        .values(sealed_address=None)
    )
    session.execute(
        update(MailMessage)
        .where(
            MailMessage.request_id == request_id,
            MailMessage.kind == INVITATION,
            MailMessage.status == "queued",
        )
        .values(status="failed", next_attempt_at=None, last_error=REQUEST_CLOSED)
    )
    session.add(
        MailMessage(
            request_id=request_id,
            kind=CONFIRMATION,
            sealed_address=sealed,
            status="queued",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.flush()
    return True


def deliveries(session: Session, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the API shows of each request's invitation: channel, status, attempts, sent_at."""
    if not request_ids:
        return {}
    rows = session.execute(
        select(
            MailMessage.request_id, MailMessage.status, MailMessage.attempts, MailMessage.sent_at
        ).where(MailMessage.request_id.in_(request_ids), MailMessage.kind == INVITATION)
    ).all()
    return {
        row.request_id: {
            "channel": "email",
            "status": row.status,
            "attempts": row.attempts,
            "sent_at": format_instant(row.sent_at) if row.sent_at is not None else None,
        }
        for row in rows
    }
