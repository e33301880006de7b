"""Consent requests: a practice asks, the patient answers once through the web form.

Answering is one conditional UPDATE (``WHERE status = 'pending' AND
expires_at > now``): of a double click, a reload, a replayed POST or two
concurrent submissions, the database lets exactly one through and the others
change nothing. A grant records the consent exactly as the API would, with
its version and event, in the same transaction as the request's new status.

The caller delivers the link, or has it mailed (``mail.queue``): no contact
data ever lands on these rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from consent_service.db.models import Consent
from consent_service.db.request_models import ConsentRequest, PolicyText
from consent_service.mail.queue import queue_confirmation
from consent_service.services.consents import Actor, grant_consent, list_consents, revoke_consent
from consent_service.services.errors import NotFound
from consent_service.timefmt import format_instant

PATIENT = "patient"
DEFAULT_EXPIRES_IN = timedelta(days=7)
MIN_EXPIRES_IN = timedelta(minutes=5)
MAX_EXPIRES_IN = timedelta(days=30)
WITHDRAWAL_REASON = "withdrawn by the patient"
MAX_LISTED_CONSENTS = 500
# The languages a request, its form, its links and its consent texts come in;
# the first is the default (the database's check constraint lists the same).
LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = LANGUAGES[0]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an answer did: ``granted``, ``refused``, ``expired``, ``already-answered``,
    ``locked``, or ``code-required`` (the request has a code the form did not check)."""

    kind: str
    request: ConsentRequest
    consent: dict[str, Any] | None = None


def create_request(
    session: Session,
    *,
    actor: Actor,
    patient_id: str,
    practitioner_id: str,
    practitioner_name: str,
    practitioner_profession: str | None,
    organization_name: str | None,
    categories: Sequence[str],
    purposes: Sequence[str],
    valid_until: datetime | None,
    valid_for_days: int | None,
    language: str,
    expires_in: timedelta,
    now: datetime,
) -> ConsentRequest:
    """Record a pending request; the caller signs and delivers its link."""
    consent_request = ConsentRequest(
        id=str(uuid.uuid4()),
        organization=actor.organization,
        organization_name=organization_name,
        requested_by=actor.name,
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        practitioner_name=practitioner_name,
        practitioner_profession=practitioner_profession,
        categories=list(dict.fromkeys(categories)),
        purposes=list(dict.fromkeys(purposes)),
        valid_until=valid_until,
        valid_for_days=valid_for_days,
        language=language,
        status="pending",
        created_at=now,
        expires_at=now + expires_in,
    )
    session.add(consent_request)
    session.flush()
    return consent_request


def get_request(session: Session, *, organization: str, request_id: str) -> ConsentRequest:
    """A request of this organization (another's is reported as missing)."""
    found = session.get(ConsentRequest, request_id)
    if found is None or found.organization != organization:
        raise NotFound("No such consent request.")
    return found


def find_request(session: Session, *, request_id: str) -> ConsentRequest:
    """A request named by a verified signed link, whatever its organization."""
    found = session.get(ConsentRequest, request_id)
    if found is None:
        raise NotFound("No such consent request.")
    return found


def effective_status(consent_request: ConsentRequest, now: datetime) -> str:
    """The status as of ``now``: a pending request past its deadline reads ``expired``.

    Reads never write; the stored status catches up on the next answer
    attempt or expiry pass.
    """
    if consent_request.status == "pending" and consent_request.expires_at <= now:
        return "expired"
    return consent_request.status


def answer_request(
    session: Session,
    *,
    request_id: str,
    grant: bool,
    text: PolicyText,
    now: datetime,
    code_checked: bool = False,
) -> Outcome:
    """Grant or refuse a pending request, at most once; queue the confirmation if mailed.

    ``code_checked``: the form verified the request's second-channel code;
    a request that has one cannot be answered without it.
    """
    new_status = "granted" if grant else "refused"
    moved = session.execute(
        update(ConsentRequest)
        .where(
            ConsentRequest.id == request_id,
            ConsentRequest.status == "pending",
            ConsentRequest.expires_at > now,
            *(() if code_checked else (ConsentRequest.verification_code_hash.is_(None),)),
        )
        .values(
            status=new_status,
            answered_at=now,
            verification_checked_at=now if code_checked else None,
            text_version=text.version,
            text_language=text.language,
            text_sha256=text.sha256,
        )
        .execution_options(synchronize_session=False)
    )
    consent_request = session.get(ConsentRequest, request_id, populate_existing=True)
    if consent_request is None:
        raise NotFound("No such consent request.")
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        if consent_request.status == "locked":
            return Outcome("locked", consent_request)
        still_open = effective_status(consent_request, now) == "pending"
        if still_open and consent_request.verification_code_hash:
            return Outcome("code-required", consent_request)
        if effective_status(consent_request, now) == "expired":
            _mark_expired(session, [request_id], now)
            session.refresh(consent_request)
            return Outcome("expired", consent_request)
        return Outcome("already-answered", consent_request)
    queue_confirmation(session, request_id=request_id, now=now)
    if not grant:
        return Outcome("refused", consent_request)
    consent = grant_consent(
        session,
        actor=Actor(name=PATIENT, organization=consent_request.organization),
        patient_id=consent_request.patient_id,
        practitioner_id=consent_request.practitioner_id,
        categories=consent_request.categories,
        purposes=consent_request.purposes,
        decision="permit",
        valid_from=now,
        valid_until=consent_validity_end(consent_request, now),
        collection={
            "method": "web-form",
            "evidence_ref": evidence_ref(consent_request.id, now, text, code_checked),
            "policy_version": f"{text.version}/{text.language}",
        },
        now=now,
    )
    consent_request.consent_id = consent["id"]
    session.flush()
    return Outcome("granted", consent_request, consent)


def consent_validity_end(consent_request: ConsentRequest, answered_at: datetime) -> datetime | None:
    """When a consent granted at ``answered_at`` ends: a date, a duration, or never."""
    if consent_request.valid_for_days is not None:
        return answered_at + timedelta(days=consent_request.valid_for_days)
    return consent_request.valid_until


def evidence_ref(
    request_id: str, answered_at: datetime, text: PolicyText, code_checked: bool = False
) -> str:
    """Proof of a web-form grant: which request, when, exactly which text, code checked.

    At most 224 characters (the column holds 256); no IP address, no user
    agent: nothing about the patient's device is kept.
    """
    return (
        f"consent-request:{request_id};answered-at:{format_instant(answered_at)};"
        f"text:{text.version}/{text.language};sha256:{text.sha256}"
        + (";second-channel-code:checked" if code_checked else "")
    )


def expire_requests(session: Session, *, now: datetime, limit: int = 1000) -> int:
    """Mark pending requests past their deadline ``expired``; return how many."""
    due = list(
        session.scalars(
            select(ConsentRequest.id)
            .where(ConsentRequest.status == "pending", ConsentRequest.expires_at <= now)
            .order_by(ConsentRequest.expires_at)
            .limit(limit)
        )
    )
    return _mark_expired(session, due, now)


def _mark_expired(session: Session, request_ids: list[str], now: datetime) -> int:
    if not request_ids:
        return 0
    result = session.execute(
        update(ConsentRequest)
        .where(
            ConsentRequest.id.in_(request_ids),
            ConsentRequest.status == "pending",
            ConsentRequest.expires_at <= now,
        )
        .values(status="expired")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def patient_consents(
    session: Session, *, organization: str, patient_id: str
) -> list[dict[str, Any]]:
    """The patient's consents in this organization (current versions), newest first."""
    page, _ = list_consents(
        session, organization=organization, patient_id=patient_id, limit=MAX_LISTED_CONSENTS
    )
    return page[::-1]


def practitioner_names(
    session: Session, *, organization: str, practitioner_ids: Sequence[str]
) -> dict[str, tuple[str, str | None]]:
    """Display name and profession of practitioners, as the latest requests gave them.

    Consents recorded through the API carry only the practitioner's id; a
    request of the same organization is where a human-readable name exists.
    """
    if not practitioner_ids:
        return {}
    rows = session.execute(
        select(
            ConsentRequest.practitioner_id,
            ConsentRequest.practitioner_name,
            ConsentRequest.practitioner_profession,
        )
        .where(
            ConsentRequest.organization == organization,
            ConsentRequest.practitioner_id.in_(set(practitioner_ids)),
        )
        .order_by(ConsentRequest.created_at)
    ).all()
    return {
        row.practitioner_id: (row.practitioner_name, row.practitioner_profession) for row in rows
    }


def withdraw_consent(
    session: Session, *, organization: str, patient_id: str, consent_id: str, now: datetime
) -> dict[str, Any]:
    """Revoke one of the patient's own consents, with the patient as actor.

    A consent of another patient is reported as missing: the signed link
    proves who the patient is, nothing else in the form does.
    """
    owner = session.scalar(
        select(Consent.patient_id).where(
            Consent.id == consent_id, Consent.organization == organization
        )
    )
    if owner != patient_id:
        raise NotFound("No such consent.")
    return revoke_consent(
        session,
        actor=Actor(name=PATIENT, organization=organization),
        consent_id=consent_id,
        reason=WITHDRAWAL_REASON,
        now=now,
    )
