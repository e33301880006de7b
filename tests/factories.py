"""Consents recorded straight through the service, for tests that need rows, not requests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from consent_service.services.consents import Actor, grant_consent
from consent_service.timefmt import utcnow


def grant(
    session: Session,
    *,
    organization: str = "practice-a",
    actor: str = "client:test",
    **overrides: Any,
) -> dict[str, Any]:
    """Grant a consent with plain defaults (paper form, permit, no end); override any field."""
    arguments: dict[str, Any] = {
        "actor": Actor(name=actor, organization=organization),
        "patient_id": f"pat-{uuid.uuid4().hex[:10]}",
        "practitioner_id": "rpps:10003456789",
        "categories": ["dental-chart"],
        "purposes": ["care-coordination"],
        "decision": "permit",
        "valid_from": None,
        "valid_until": None,
        "collection": {"method": "paper", "evidence_ref": None, "policy_version": None},
        "now": utcnow(),
    }
    arguments.update(overrides)
    return grant_consent(session, **arguments)
