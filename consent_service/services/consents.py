"""Recording consents: grant, amend, revoke, expire, and reading them back.

Every change bumps the consent's version with a compare-and-set
(``UPDATE ... WHERE version = :expected``): of two concurrent amendments of
the same version, the database lets exactly one through. The new version row
(unique per consent and number) and its outbox event are added in the same
transaction.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from consent_service import audit
from consent_service.db.models import CONSENT_STATE_FIELDS, Consent, ConsentVersion
from consent_service.outbox.writer import add_event
from consent_service.services.errors import Conflict, InvalidConsent, NotFound, StaleVersion
from consent_service.timefmt import format_instant

AMENDABLE_FIELDS = frozenset(
    {"categories", "purposes", "decision", "valid_from", "valid_until", "collection"}
)
COLLECTION_FIELDS = ("method", "evidence_ref", "policy_version")
_consents = cast(Table, Consent.__table__)
_versions = cast(Table, ConsentVersion.__table__)
UPDATED_COMPARISONS = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change, as recorded in versions (``client:<id>``, ``patient``...)."""

    name: str
    organization: str


def snapshot(version: ConsentVersion) -> dict[str, Any]:
    """The wire form of a version: consent fields plus the change that made it."""
    return {
        "id": version.consent_id,
        "organization": version.organization,
        "patient_id": version.patient_id,
        "practitioner_id": version.practitioner_id,
        "categories": list(version.categories),
        "purposes": list(version.purposes),
        "decision": version.decision,
        "valid_from": format_instant(version.valid_from),
        "valid_until": format_instant(version.valid_until) if version.valid_until else None,
        "collection": {
            "method": version.collection_method,
            "evidence_ref": version.evidence_ref,
            "policy_version": version.policy_version,
        },
        "status": version.status,
        "version": version.version,
        "created_at": format_instant(version.created_at),
        "updated_at": format_instant(version.updated_at),
        "change": version.change,
        "actor": version.actor,
        "reason": version.reason,
        "recorded_at": format_instant(version.recorded_at),
    }


def grant_consent(
    session: Session,
    *,
    actor: Actor,
    patient_id: str,
    practitioner_id: str,
    categories: Sequence[str],
    purposes: Sequence[str],
    decision: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
    collection: Mapping[str, str | None],
    now: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """Record a new consent at version 1 and stage its ``consent.granted`` event."""
    start = valid_from or now
    _check_validity(start, valid_until)
    consent_id = str(uuid.uuid4())
    state = {
        "organization": actor.organization,
        "patient_id": patient_id,
        "practitioner_id": practitioner_id,
        "categories": _unique(categories),
        "purposes": _unique(purposes),
        "decision": decision,
        "valid_from": start,
        "valid_until": valid_until,
        "collection_method": collection["method"],
        "evidence_ref": collection.get("evidence_ref"),
        "policy_version": collection.get("policy_version"),
        "status": "active",
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    session.execute(insert(_consents), {"id": consent_id, **state})
    return _record_version(
        session, consent_id, state, change="granted", actor=actor, reason=reason, now=now
    )


def amend_consent(
    session: Session,
    *,
    actor: Actor,
    consent_id: str,
    expected_version: int,
    changes: Mapping[str, Any],
    now: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    """Apply ``changes`` to an active consent at ``expected_version``."""
    unknown = set(changes) - AMENDABLE_FIELDS
    if unknown:
        raise InvalidConsent({name: ["Field cannot be amended."] for name in sorted(unknown)})
    consent = _load(session, actor.organization, consent_id)
    _expect_version(consent, expected_version)
    if consent.status != "active":
        raise Conflict(f"The consent is {consent.status}; only an active consent can be amended.")
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "collection":
            values["collection_method"] = value["method"]
            values["evidence_ref"] = value.get("evidence_ref")
            values["policy_version"] = value.get("policy_version")
        elif name in ("categories", "purposes"):
            values[name] = _unique(value)
        else:
            values[name] = value
    _check_validity(
        values.get("valid_from", consent.valid_from),
        values.get("valid_until", consent.valid_until),
    )
    return _bump(session, consent, values, change="amended", actor=actor, reason=reason, now=now)


def revoke_consent(
    session: Session,
    *,
    actor: Actor,
    consent_id: str,
    reason: str | None,
    now: datetime,
    expected_version: int | None = None,
) -> dict[str, Any]:
    """Withdraw an active consent; a revoked or expired one is a conflict."""
    consent = _load(session, actor.organization, consent_id)
    if expected_version is not None:
        _expect_version(consent, expected_version)
    if consent.status != "active":
        raise Conflict(f"The consent is already {consent.status}.")
    return _bump(
        session,
        consent,
        {"status": "revoked"},
        change="revoked",
        actor=actor,
        reason=reason,
        now=now,
    )


def revoke_practitioner_consents(
    session: Session, *, actor: Actor, practitioner_id: str, reason: str | None, now: datetime
) -> list[dict[str, Any]]:
    """Revoke every active consent of the actor's organization naming a practitioner."""
    consents = session.scalars(
        select(Consent)
        .where(
            Consent.organization == actor.organization,
            Consent.practitioner_id == practitioner_id,
            Consent.status == "active",
        )
        .order_by(Consent.created_at, Consent.id)
    ).all()
    return [
        _bump(
            session,
            consent,
            {"status": "revoked"},
            change="revoked",
            actor=actor,
            reason=reason,
            now=now,
        )
        for consent in consents
    ]


def expire_consent(
    session: Session, *, consent_id: str, expected_version: int, now: datetime
) -> dict[str, Any] | None:
    """Mark one consent expired if it is still the version the caller saw.

    Returns None when another writer (a revoke, another expiry pass) got
    there first: the compare-and-set lets exactly one change through.
    """
    consent = session.get(Consent, consent_id)
    if consent is None or consent.version != expected_version or consent.status != "active":
        return None
    if consent.valid_until is None or consent.valid_until > now:
        return None
    actor = Actor(name="system:expiry", organization=consent.organization)
    try:
        return _bump(
            session,
            consent,
            {"status": "expired"},
            change="expired",
            actor=actor,
            reason="valid_until reached",
            now=now,
        )
    except StaleVersion:
        return None


def due_for_expiry(session: Session, *, now: datetime, limit: int) -> list[tuple[str, int]]:
    """(consent id, version) of active consents whose ``valid_until`` has passed."""
    rows = session.execute(
        select(Consent.id, Consent.version)
        .where(Consent.status == "active", Consent.valid_until <= now)
        .order_by(Consent.valid_until)
        .limit(limit)
    ).all()
    return [(row.id, row.version) for row in rows]


def get_consent(session: Session, *, organization: str, consent_id: str) -> dict[str, Any]:
    """The current version of one consent of this organization."""
    consent = _load(session, organization, consent_id)
    return get_version(
        session, organization=organization, consent_id=consent.id, number=consent.version
    )


def get_version(
    session: Session, *, organization: str, consent_id: str, number: int
) -> dict[str, Any]:
    """One version of a consent of this organization."""
    version = session.scalar(
        select(ConsentVersion).where(
            ConsentVersion.consent_id == consent_id,
            ConsentVersion.organization == organization,
            ConsentVersion.version == number,
        )
    )
    if version is None:
        raise NotFound("No such consent version.")
    return snapshot(version)


def list_versions(session: Session, *, organization: str, consent_id: str) -> list[dict[str, Any]]:
    """Every version of one consent, oldest first."""
    _load(session, organization, consent_id)
    versions = session.scalars(
        select(ConsentVersion)
        .where(ConsentVersion.consent_id == consent_id)
        .order_by(ConsentVersion.version)
    ).all()
    return [snapshot(version) for version in versions]


def list_consents(
    session: Session,
    *,
    organization: str,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
    status: str | Sequence[str] | None = None,
    updated: Sequence[tuple[str, datetime]] = (),
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """A page of current versions, oldest first, and the key to resume after it.

    ``status`` is one status or several; ``updated`` bounds the instant the
    current version was recorded, as (operator, instant) pairs, operators
    ``lt le gt ge eq``.
    """
    query = (
        select(ConsentVersion)
        .join(
            Consent,
            (Consent.id == ConsentVersion.consent_id) & (Consent.version == ConsentVersion.version),
        )
        .where(Consent.organization == organization)
        .order_by(Consent.created_at, Consent.id)
        .limit(limit + 1)
    )
    if patient_id is not None:
        query = query.where(Consent.patient_id == patient_id)
    if practitioner_id is not None:
        query = query.where(Consent.practitioner_id == practitioner_id)
    if isinstance(status, str):
        query = query.where(Consent.status == status)
    elif status is not None:
        query = query.where(Consent.status.in_(status))
    for comparison, instant in updated:
        query = query.where(UPDATED_COMPARISONS[comparison](Consent.updated_at, instant))
    if after is not None:
        created_at, consent_id = after
        query = query.where(
            (Consent.created_at > created_at)
            | ((Consent.created_at == created_at) & (Consent.id > consent_id))
        )
    versions = session.scalars(query).all()
    page = [snapshot(version) for version in versions[:limit]]
    resume = (
        (versions[limit - 1].created_at, versions[limit - 1].consent_id)
        if len(versions) > limit
        else None
    )
    return page, resume


def export_patient(session: Session, *, organization: str, patient_id: str) -> list[dict[str, Any]]:
    """Every consent of a patient in this organization with all its versions."""
    versions = session.scalars(
        select(ConsentVersion)
        .where(
            ConsentVersion.organization == organization,
            ConsentVersion.patient_id == patient_id,
        )
        .order_by(ConsentVersion.created_at, ConsentVersion.consent_id, ConsentVersion.version)
    ).all()
    consents: dict[str, dict[str, Any]] = {}
    for version in versions:
        entry = consents.setdefault(version.consent_id, {"id": version.consent_id, "versions": []})
        entry["versions"].append(snapshot(version))
    for entry in consents.values():
        entry["current"] = entry["versions"][-1]
    return list(consents.values())


def _load(session: Session, organization: str, consent_id: str) -> Consent:
    consent = session.get(Consent, consent_id)
    # Another organization's consent is reported exactly like a missing one.
    if consent is None or consent.organization != organization:
        raise NotFound("No such consent.")
    return consent


def _expect_version(consent: Consent, expected: int) -> None:
    if consent.version != expected:
        raise StaleVersion(
            f"The consent is at version {consent.version}, not {expected}.",
            current_version=consent.version,
        )


def _bump(
    session: Session,
    consent: Consent,
    values: Mapping[str, Any],
    *,
    change: str,
    actor: Actor,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    expected = consent.version
    result = session.execute(
        update(Consent)
        .where(Consent.id == consent.id, Consent.version == expected)
        .values(**values, version=expected + 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleVersion("The consent changed meanwhile; read it again.")
    session.refresh(consent)
    state = {name: getattr(consent, name) for name in CONSENT_STATE_FIELDS}
    return _record_version(
        session, consent.id, state, change=change, actor=actor, reason=reason, now=now
    )


def _record_version(
    session: Session,
    consent_id: str,
    state: Mapping[str, Any],
    *,
    change: str,
    actor: Actor,
    reason: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Insert the version a change made, its event and its audit entry; return its wire form.

    Plain inserts rather than the ORM's unit of work: the rows are new and
    final, and a grant's four inserts through the unit of work cost more
    than running them.
    """
    row = {
        "consent_id": consent_id,
        **{name: state[name] for name in CONSENT_STATE_FIELDS},
        "change": change,
        "actor": actor.name,
        "reason": reason,
        "recorded_at": now,
    }
    session.execute(insert(_versions), row)
    version = ConsentVersion(**row)
    data = snapshot(version)
    add_event(session, snapshot=data, now=now)
    audit.audit_new_version(session, version)
    return data


def _check_validity(valid_from: datetime, valid_until: datetime | None) -> None:
    if valid_until is not None and valid_until <= valid_from:
        raise InvalidConsent({"valid_until": ["Must be later than valid_from."]})


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))
