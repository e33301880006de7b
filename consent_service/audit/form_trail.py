"""What the patient form appends to the audit log, and with which ids.

The contract (docs/design.md) asks for an entry for every read of a patient's consents. The form's
pages read them without an API client, so the API's after-request trail
(``audit.trail``, ``/v1`` only) never sees them: the views call this
module. Every entry names the actor ``patient`` and the ids involved (the
consent request, the patient reference, practitioner and consent ids), never
the link's token, a name or a text.

| page | entry (action, outcome) |
|---|---|
| answer form shown | ``consent-request.read``, ``ok`` |
| "my consents" shown | ``patient.consents``, ``ok``, every consent and emergency access id |
| a refusal answered | ``consent-request.refused``, ``ok``, in the answer's transaction |
| the form shown after the right code | ``consent-request.read``, ``ok`` |
| the fifth wrong code | ``consent-request.locked``, ``ok``, in the lock's transaction |
| a grant or a withdrawal | ``consent.granted`` / ``consent.revoked``, by ``audit`` |
| link tampered with, expired, naming no request | page's action, ``refused``, ``link``: why |
| already answered, not active | the page's action, ``conflict`` |
| another patient's consent | ``consent.withdraw``, ``not-found`` |

Reads are appended like the API's, on a connection of their own that does
not wait for the disk flush (``audit.trail.audit_engine``). A page whose
read cannot be recorded is not shown; a refusal whose entry cannot be written
is refused all the same, and logged.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import g, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from consent_service import audit
from consent_service.audit.trail import audit_engine
from consent_service.db.request_models import ConsentRequest
from consent_service.http.context import state
from consent_service.services.requests import PATIENT
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

ACTIONS = {
    "web.answer_form": "consent-request.read",
    "web.check_code": "consent-request.read",
    "web.answer_submit": "consent-request.answer",
    "web.my_consents": "patient.consents",
    "web.withdraw": "consent.withdraw",
}
REFUSED_ANSWER = "consent-request.refused"
OK = "ok"
REFUSED = "refused"
CONFLICT = "conflict"
NOT_FOUND = "not-found"


def note(**ids: Any) -> None:
    """Remember ids of this request for its entry, as soon as the view knows them."""
    noted: dict[str, Any] = g.setdefault("patient_audit_ids", {})
    noted.update(ids)


def note_request(consent_request: ConsentRequest) -> None:
    """Remember the consent request a verified link named, and its organization."""
    g.patient_audit_organization = consent_request.organization
    note(
        consent_request_id=consent_request.id,
        patient_id=consent_request.patient_id,
        practitioner_id=consent_request.practitioner_id,
    )


def record(outcome: str, status: int, **ids: Any) -> None:
    """Append this page's entry now; raises ``SQLAlchemyError`` when it cannot be written."""
    with audit_engine(state().database).connect() as connection:
        audit.append(connection, [_record(outcome, status, ids)], now=utcnow())


def record_refusal(outcome: str, status: int, **ids: Any) -> None:
    """Append the entry of a refused or conflicting attempt; a failure is only logged."""
    try:
        record(outcome, status, **ids)
    except SQLAlchemyError:
        log.exception("audit append failed request_id=%s", g.get("request_id"))


def stage(session: Session, action: str, *, now: datetime) -> None:
    """Add this request's ``ok`` entry to ``session``'s transaction: it commits with the write."""
    audit.append_in_session(session, [_record(OK, 200, {}, action=action)], now=now)


def _record(outcome: str, status: int, ids: dict[str, Any], action: str = "") -> audit.Record:
    objects = {"actor": PATIENT, **g.get("patient_audit_ids", {}), **ids}
    return audit.Record(
        action=action or ACTIONS[request.endpoint or ""],
        outcome=outcome,
        status=status,
        objects=objects,
        organization=g.get("patient_audit_organization"),
        request_id=g.get("request_id"),
    )
