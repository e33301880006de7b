"""Enforcement receipts: subscribers acknowledge what they applied; who is behind.

A subscriber is an API client of an organization holding the ``events:ack``
scope and not revoked. Its software acknowledges each consent change once it
is durably applied; the service keeps, per subscriber and consent, the
highest version acknowledged. A consent is enforced everywhere when every
active subscriber of its organization has acknowledged its current version.
With no subscriber at all nothing confirms enforcement, so it is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consent_service.db.models import ApiClient, Consent, OutboxEvent
from consent_service.db.receipt_models import SubscriberReceipt
from consent_service.services.errors import NotFound

ACK_SCOPE = "events:ack"
MAX_ACKS = 500
REVOKED_EVENT = "consent.revoked"

_receipts = SubscriberReceipt.__table__
_RECEIPT_COLUMNS = ("applied_version", "event_id", "applied_at", "acknowledged_at")


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledgement as the kit sends it."""

    event_id: str
    consent_id: str
    version: int
    applied_at: datetime


@dataclass
class AckOutcome:
    """What a batch did: acks accepted (recorded or already known) and refused.

    ``enforced`` lists the revocations this batch completed, with the seconds
    from the revocation being recorded to its last acknowledgement.
    """

    accepted: int = 0
    refused: int = 0
    enforced: list[float] = field(default_factory=list)


def active_subscribers(session: Session, organization: str) -> list[ApiClient]:
    """The organization's clients that acknowledge changes, oldest first."""
    clients = session.scalars(
        select(ApiClient)
        .where(ApiClient.organization == organization, ApiClient.revoked_at.is_(None))
        .order_by(ApiClient.created_at, ApiClient.id)
    )
    return [client for client in clients if ACK_SCOPE in (client.scopes or [])]


def record_acks(
    session: Session,
    *,
    subscriber_id: str,
    organization: str,
    acks: Sequence[Ack],
    now: datetime,
) -> AckOutcome:
    """Record a batch of acknowledgements; never lower a recorded version.

    An ack naming an unknown consent, another organization's consent, or a
    version the consent never had is refused and changes nothing. An
    ``applied_at`` in the future (a subscriber's clock running ahead) is
    recorded as the moment of receipt.
    """
    outcome = AckOutcome()
    consent_ids = {ack.consent_id for ack in acks}
    consents = {
        consent.id: consent
        for consent in session.scalars(
            select(Consent).where(Consent.id.in_(consent_ids), Consent.organization == organization)
        )
    }
    highest: dict[str, Ack] = {}
    for ack in acks:
        consent = consents.get(ack.consent_id)
        if consent is None or ack.version > consent.version:
            outcome.refused += 1
            continue
        outcome.accepted += 1
        known = highest.get(ack.consent_id)
        if known is None or ack.version > known.version:
            highest[ack.consent_id] = ack
    if not highest:
        return outcome
    rows = [
        {
            "subscriber_id": subscriber_id,
            "consent_id": ack.consent_id,
            "organization": organization,
            "applied_version": ack.version,
            "event_id": ack.event_id,
            "applied_at": min(ack.applied_at, now),
            "acknowledged_at": now,
        }
        for ack in highest.values()
    ]
    advanced = _upsert_forward(session, rows)
    outcome.enforced = _completed_revocations(
        session, organization, [consents[cid] for cid in advanced], now
    )
    return outcome


def _upsert_forward(session: Session, rows: list[dict[str, Any]]) -> list[str]:
    """Insert or raise each receipt; return the consents whose receipt moved."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = insert(SubscriberReceipt).values(rows)
    upsert = values.on_conflict_do_update(
        index_elements=[_receipts.c.subscriber_id, _receipts.c.consent_id],
        set_={name: values.excluded[name] for name in _RECEIPT_COLUMNS},
        where=_receipts.c.applied_version < values.excluded.applied_version,
    ).returning(_receipts.c.consent_id)
    return list(session.execute(upsert).scalars())


def _completed_revocations(
    session: Session, organization: str, advanced: list[Consent], now: datetime
) -> list[float]:
    """Latencies of the revocations that this batch made enforced everywhere."""
    revoked = [consent for consent in advanced if consent.status == "revoked"]
    if not revoked:
        return []
    subscribers = {client.id for client in active_subscribers(session, organization)}
    latencies = []
    for consent in revoked:
        applied = _applied_versions(session, consent.id)
        if all(applied.get(sid, 0) >= consent.version for sid in subscribers):
            latencies.append(max((now - consent.updated_at).total_seconds(), 0.0))
    return latencies


def _applied_versions(session: Session, consent_id: str) -> dict[str, int]:
    rows = session.execute(
        select(SubscriberReceipt.subscriber_id, SubscriberReceipt.applied_version).where(
            SubscriberReceipt.consent_id == consent_id
        )
    )
    return {row.subscriber_id: row.applied_version for row in rows}


def enforcement(session: Session, *, organization: str, consent_id: str) -> dict[str, Any]:
    """Which active subscriber has applied which version of one consent."""
    consent = session.get(Consent, consent_id)
    if consent is None or consent.organization != organization:
        raise NotFound("No such consent.")
    receipts = {
        receipt.subscriber_id: receipt
        for receipt in session.scalars(
            select(SubscriberReceipt).where(SubscriberReceipt.consent_id == consent_id)
        )
    }
    items: list[dict[str, Any]] = []
    for client in active_subscribers(session, organization):
        receipt = receipts.get(client.id)
        items.append(
            {
                "subscriber_id": client.id,
                "name": client.name,
                "applied_version": receipt.applied_version if receipt else None,
                "applied_at": receipt.applied_at if receipt else None,
                "acknowledged_at": receipt.acknowledged_at if receipt else None,
            }
        )
    everywhere = bool(items) and all(
        (item["applied_version"] or 0) >= consent.version for item in items
    )
    return {
        "consent_id": consent.id,
        "version": consent.version,
        "enforced_everywhere": everywhere,
        "subscribers": items,
    }


@dataclass(frozen=True, slots=True)
class SubscriberLag:
    """How far behind one subscriber is; ``late_revocations`` counts those past the SLA."""

    subscriber_id: str
    name: str
    organization: str
    last_ack_at: datetime | None
    unacknowledged: int
    oldest_unacknowledged_at: datetime | None
    oldest_unacknowledged_revocation_at: datetime | None
    late_revocations: int


def subscriber_lags(
    session: Session, *, organization: str | None = None, late_before: datetime | None = None
) -> list[SubscriberLag]:
    """How far behind each active subscriber is (of one organization, or of all).

    A change is unacknowledged while the subscriber's receipt for its consent
    is missing or names an older version. A revocation recorded before
    ``late_before`` and still unacknowledged is late.
    """
    if organization is None:
        organizations = session.scalars(
            select(ApiClient.organization).where(ApiClient.revoked_at.is_(None)).distinct()
        ).all()
    else:
        organizations = [organization]
    lags = []
    for org in organizations:
        for client in active_subscribers(session, org):
            lags.append(_lag_of(session, client, late_before))
    return lags


def _lag_of(session: Session, client: ApiClient, late_before: datetime | None) -> SubscriberLag:
    receipt = SubscriberReceipt
    is_revocation = OutboxEvent.type == REVOKED_EVENT
    late = (
        and_(is_revocation, OutboxEvent.created_at < late_before)
        if late_before is not None
        else false()
    )
    count, oldest, oldest_revocation, late_count = session.execute(
        select(
            func.count(),
            func.min(OutboxEvent.created_at),
            func.min(case((is_revocation, OutboxEvent.created_at))),
            func.coalesce(func.sum(case((late, 1), else_=0)), 0),
        )
        .select_from(OutboxEvent)
        .outerjoin(
            receipt,
            and_(
                receipt.consent_id == OutboxEvent.consent_id,
                receipt.subscriber_id == client.id,
            ),
        )
        .where(
            OutboxEvent.organization == client.organization,
            or_(
                receipt.applied_version.is_(None),
                receipt.applied_version < OutboxEvent.consent_version,
            ),
        )
    ).one()
    last_ack_at = session.scalar(
        select(func.max(receipt.acknowledged_at)).where(receipt.subscriber_id == client.id)
    )
    return SubscriberLag(
        subscriber_id=client.id,
        name=client.name,
        organization=client.organization,
        last_ack_at=_aware(last_ack_at),
        unacknowledged=int(count),
        oldest_unacknowledged_at=_aware(oldest),
        oldest_unacknowledged_revocation_at=_aware(oldest_revocation),
        late_revocations=int(late_count),
    )


def _aware(value: datetime | None) -> datetime | None:
    """Aggregates skip the column type, so SQLite hands back naive UTC instants."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WithdrawalReceipt:
    """For the patient: how many practice systems applied a withdrawal, and when."""

    applied: int
    total: int
    applied_at: datetime | None


def withdrawal_receipts(
    session: Session, *, organization: str, consent_ids: Sequence[str]
) -> dict[str, WithdrawalReceipt]:
    """For each consent, how many active subscribers applied its current version.

    ``applied_at`` is when the last of them applied it, once all have.
    """
    if not consent_ids:
        return {}
    subscribers = {client.id for client in active_subscribers(session, organization)}
    consents = session.scalars(
        select(Consent).where(Consent.id.in_(consent_ids), Consent.organization == organization)
    ).all()
    done: dict[str, list[datetime]] = {consent.id: [] for consent in consents}
    rows = session.execute(
        select(SubscriberReceipt.consent_id, SubscriberReceipt.applied_at)
        .join(Consent, Consent.id == SubscriberReceipt.consent_id)
        .where(
            SubscriberReceipt.consent_id.in_(consent_ids),
            SubscriberReceipt.organization == organization,
            SubscriberReceipt.subscriber_id.in_(subscribers),
            SubscriberReceipt.applied_version >= Consent.version,
        )
    )
    for consent_id, applied_at in rows:
        done[consent_id].append(applied_at)
    receipts = {}
    for consent_id, moments in done.items():
        complete = bool(subscribers) and len(moments) == len(subscribers)
        receipts[consent_id] = WithdrawalReceipt(
            len(moments), len(subscribers), max(moments) if complete else None
        )
    return receipts
