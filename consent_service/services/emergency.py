"""Emergency access ("break the glass"): open, end, expire, list, and find the open ones.

While an access is open (``status`` open and ``expires_at`` not reached),
decisions for its patient and practitioner answer permit with reason
``emergency-access``, even over a deny (``services.decisions``). Opening,
ending and expiring each write, in the same transaction, an audit entry and
a ``consent.emergency-access`` event. Closing is a compare-and-set on
``version`` 1 → 2: of an end and the expiry pass racing, exactly one wins.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from consent_service.audit.chain import Record, append_in_session, current_context
from consent_service.db.emergency_models import EmergencyAccess
from consent_service.outbox.writer import EMERGENCY_ACCESS, add_typed_event
from consent_service.services.consents import Actor
from consent_service.services.errors import Conflict, NotFound
from consent_service.services.pair_filter import pair_clause
from consent_service.timefmt import format_instant

EXPIRY_ACTOR = "system:expiry"
_accesses = EmergencyAccess.__table__
# One pair's accesses, on the pair's index; equality binds rather than an expanding
# IN list, which cost a decision half as much again as its consent query.
_FOR_PAIR = select(
    _accesses.c.id,
    _accesses.c.opened_at,
    _accesses.c.expires_at,
    _accesses.c.closed_at,
).where(
    pair_clause(_accesses),
)


def open_emergency_access(
    session: Session,
    *,
    actor: Actor,
    patient_id: str,
    practitioner_id: str,
    justification: str,
    duration_minutes: int,
    now: datetime,
) -> EmergencyAccess:
    """Open an access for ``duration_minutes``; audited and announced in this transaction."""
    access = EmergencyAccess(
        id=str(uuid.uuid4()),
        organization=actor.organization,
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        justification=justification,
        status="open",
        version=1,
        opened_by=actor.name,
        opened_at=now,
        expires_at=now + timedelta(minutes=duration_minutes),
    )
    session.add(access)
    _record(session, access, change="opened", now=now)
    session.flush()
    return access


def end_emergency_access(
    session: Session, *, actor: Actor, access_id: str, now: datetime
) -> EmergencyAccess:
    """End an open access now; 404 for another organization's, 409 once it has stopped."""
    access = session.get(EmergencyAccess, access_id)
    if access is None or access.organization != actor.organization:
        raise NotFound("No such emergency access.")
    if not _close(session, access, status="ended", actor=actor.name, now=now):
        raise Conflict(f"The emergency access has already stopped ({access.status}).")
    return access


def expire_emergency_accesses(session: Session, *, now: datetime, limit: int) -> int:
    """Close the open accesses whose ``expires_at`` has passed; return how many this call closed."""
    due = session.scalars(
        select(EmergencyAccess)
        .where(EmergencyAccess.status == "open", EmergencyAccess.expires_at <= now)
        .order_by(EmergencyAccess.expires_at)
        .limit(limit)
    ).all()
    # Each one stops at its own expires_at, not at the instant this pass ran.
    return sum(
        _close(session, access, status="expired", actor=EXPIRY_ACTOR, now=access.expires_at)
        for access in due
    )


def list_emergency_accesses(
    session: Session, *, organization: str, patient_id: str
) -> list[EmergencyAccess]:
    """A patient's accesses in this organization, newest first."""
    return list(
        session.scalars(
            select(EmergencyAccess)
            .where(
                EmergencyAccess.organization == organization,
                EmergencyAccess.patient_id == patient_id,
            )
            .order_by(EmergencyAccess.opened_at.desc(), EmergencyAccess.id)
        )
    )


# An access as (id, from, until): open at an instant in [from, until).
Window = tuple[str, datetime, datetime]


def window(
    access_id: str, opened_at: datetime, expires_at: datetime, closed_at: datetime | None
) -> Window:
    """The instants an access was open: from its opening to its expiry or its closing."""
    return (access_id, opened_at, min(expires_at, closed_at or expires_at))


def access_windows(
    connection: Connection, *, organization: str, pair: tuple[str, str]
) -> list[Window]:
    """A (patient, practitioner) pair's accesses, for ``open_at``."""
    parameters = {"organization": organization, "patient_id": pair[0], "practitioner_id": pair[1]}
    return [
        window(row.id, row.opened_at, row.expires_at, row.closed_at)
        for row in connection.execute(_FOR_PAIR, parameters)
    ]


def open_at(windows: list[Window], at: datetime) -> str | None:
    """The id of the access open at ``at`` among ``windows`` (the latest opened), or None."""
    matching = [window for window in windows if window[1] <= at < window[2]]
    return max(matching, key=lambda window: (window[1], window[0]))[0] if matching else None


def wire(access: EmergencyAccess, now: datetime) -> dict[str, Any]:
    """The API's form of an access; one past ``expires_at`` reads expired before the pass runs."""
    status = access.status
    if status == "open" and access.expires_at <= now:
        status = "expired"
    return {
        "id": access.id,
        "patient_id": access.patient_id,
        "practitioner_id": access.practitioner_id,
        "justification": access.justification,
        "status": status,
        "opened_by": access.opened_by,
        "opened_at": format_instant(access.opened_at),
        "expires_at": format_instant(access.expires_at),
        "closed_at": format_instant(access.closed_at) if access.closed_at else None,
        "closed_by": access.closed_by,
    }


def _close(
    session: Session, access: EmergencyAccess, *, status: str, actor: str, now: datetime
) -> bool:
    closed = session.execute(
        update(EmergencyAccess)
        .where(EmergencyAccess.id == access.id, EmergencyAccess.version == 1)
        .values(status=status, version=2, closed_at=now, closed_by=actor)
        .execution_options(synchronize_session=False)
    )
    session.refresh(access)
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    _record(session, access, change=status, now=now)
    session.flush()
    return True


def _event_data(access: EmergencyAccess, change: str) -> dict[str, Any]:
    return {
        "id": access.id,
        "organization": access.organization,
        "patient_id": access.patient_id,
        "practitioner_id": access.practitioner_id,
        "status": access.status,
        "version": access.version,
        "change": change,
        "opened_by": access.opened_by,
        "opened_at": format_instant(access.opened_at),
        "expires_at": format_instant(access.expires_at),
        "closed_at": format_instant(access.closed_at) if access.closed_at else None,
        "closed_by": access.closed_by,
    }


def _record(session: Session, access: EmergencyAccess, *, change: str, now: datetime) -> None:
    """The event and the audit entry of this change, staged in the session's transaction."""
    data = _event_data(access, change)
    add_typed_event(
        session,
        event_type=EMERGENCY_ACCESS,
        subject=access.id,
        version=access.version,
        organization=access.organization,
        data=data,
        now=now,
    )
    context = current_context.get()
    objects = {
        "emergency_access_id": access.id,
        "patient_id": access.patient_id,
        "practitioner_id": access.practitioner_id,
        "actor": access.closed_by if change != "opened" else access.opened_by,
    }
    append_in_session(
        session,
        [
            Record(
                action=f"emergency-access.{change}",
                outcome="ok",
                objects=objects,
                client_id=context.client_id if context else None,
                organization=access.organization,
                request_id=context.request_id if context else None,
                occurred_at=now,
            )
        ],
        now=now,
    )
    # The request's trail then knows this write was audited in its own transaction.
    session.info.setdefault("audited_consents", []).append(access.id)
