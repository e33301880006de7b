"""The second-channel code on the patient form: checked before anything is shown.

A request created with ``"verification": "code"`` opens on a page that asks
for the code and names nothing else (no practice, practitioner, data or
purpose). A right code shows the form, which then carries a short-lived
signed proof (``links.CODE_CHECKED``) that the answer must return; a wrong
one is counted, and the fifth locks the request, with its audit entry in the
same transaction (``services.verification``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from consent_service.audit import form_trail as audit_trail
from consent_service.db.session import Database
from consent_service.services import links, verification
from consent_service.services import requests as service

LOCKED_ACTION = "consent-request.locked"


@dataclass(frozen=True)
class CodeResult:
    """``ok``, ``wrong`` (``tries_left`` more), ``locked``, or ``closed`` (not pending)."""

    kind: str
    tries_left: int = 0


def check(
    database: Database, keys: Sequence[str], request_id: str, code: str, now: datetime
) -> CodeResult:
    """Compare ``code`` with the request's; count and, at the fifth miss, lock."""
    with database.transaction() as session:
        consent_request = service.find_request(session, request_id=request_id)
        if service.effective_status(consent_request, now) != "pending":
            return CodeResult("closed")
        if verification.code_matches(keys, consent_request, code):
            return CodeResult("ok")
        left = verification.count_failure(session, request_id=request_id)
        if left == 0:
            audit_trail.stage(session, LOCKED_ACTION, now=now)
            return CodeResult("locked")
        return CodeResult("wrong", left)


def proof(keys: Sequence[str], request_id: str) -> str:
    """What the answer form carries once the code was typed right."""
    return links.sign(keys, links.CODE_CHECKED, request_id)


def proven(keys: Sequence[str], request_id: str, token: str | None) -> bool:
    """Whether ``token`` proves the code of ``request_id`` was checked within the hour."""
    try:
        return links.verify(keys, links.CODE_CHECKED, token) == request_id
    except links.LinkError:
        return False
