"""A code handed to the patient by a second channel, checked before the form shows anything.

With ``"verification": "code"`` the practice receives a 6-digit code once,
in the 201 answer, and gives it to the patient in person or by SMS: a link
forwarded or read in someone else's mailbox is then not enough to answer.
The code is stored as an HMAC under the newest of ``CONSENT_SECRET_KEYS``
(a plain hash of a 6-digit number is reversed in a millisecond) and bound
to its request; every listed key verifies, so keys rotate as for links.
Comparison is constant-time.

Each wrong code is counted by a conditional UPDATE; the fifth locks the
request (``status: "locked"``): a state change with no consent, hence no
event, and an audit entry in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.orm import Session

from consent_service.db.request_models import ConsentRequest

MAX_FAILURES = 5
CODE_DIGITS = 6


def issue_code(session: Session, consent_request: ConsentRequest, keys: Sequence[str]) -> str:
    """Give the request a fresh code: its hash is stored, the code itself only returned."""
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    consent_request.verification_code_hash = code_hash(keys[0], consent_request.id, code)
    session.flush()
    return code


def code_hash(key: str, request_id: str, code: str) -> str:
    message = f"{request_id}:{code}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def code_matches(keys: Sequence[str], consent_request: ConsentRequest, code: str) -> bool:
    stored = consent_request.verification_code_hash or ""
    candidate = code.strip()
    if len(candidate) != CODE_DIGITS or not candidate.isdigit():
        candidate = ""  # compared all the same: the time taken tells nothing
    found = False
    for key in keys:
        found |= hmac.compare_digest(code_hash(key, consent_request.id, candidate), stored)
    return found and candidate != ""


def count_failure(session: Session, *, request_id: str) -> int:
    """Count one wrong code; lock the request at the fifth. Returns the tries left."""
    session.execute(
        update(ConsentRequest)
        .where(ConsentRequest.id == request_id, ConsentRequest.status == "pending")
        .values(verification_failures=ConsentRequest.verification_failures + 1)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ConsentRequest)
        .where(
            ConsentRequest.id == request_id,
            ConsentRequest.status == "pending",
            ConsentRequest.verification_failures >= MAX_FAILURES,
        )
        .values(status="locked")
        .execution_options(synchronize_session=False)
    )
    found = session.get(ConsentRequest, request_id, populate_existing=True)
    assert found is not None
    return max(0, MAX_FAILURES - found.verification_failures)
