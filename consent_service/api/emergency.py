"""Emergency access (break the glass): open, end, and list a patient's."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from sqlalchemy.orm import Session

from consent_service.api.apidoc import answers, idempotent
from consent_service.api.schemas import (
    EmergencyAccessCreateSchema,
    EmergencyAccessEndSchema,
    EmergencyAccessListSchema,
    EmergencyAccessOpenedSchema,
    EmergencyAccessQueryArgsSchema,
    EmergencyAccessSchema,
)
from consent_service.db.emergency_models import EmergencyAccess
from consent_service.http.auth import requires
from consent_service.http.context import actor, principal, state
from consent_service.http.parsing import ConsentBlueprint
from consent_service.http.problems import problem
from consent_service.http.writes import Answer, json_response, write
from consent_service.services import emergency as service
from consent_service.services.errors import NotFound
from consent_service.timefmt import format_instant, utcnow

blp = ConsentBlueprint(
    "emergency_access", __name__, url_prefix="/v1", description="Emergency access"
)


def _not_for_others(practitioner_id: str) -> Response | None:
    """403 when a practitioner's token acts for another practitioner; None otherwise."""
    acting = principal().practitioner_id
    if acting is None or acting == practitioner_id:
        return None
    return problem(
        403,
        "Forbidden",
        f"This practitioner's token may only open or end emergency access for `{acting}`.",
    )


@blp.route("/emergency-access", methods=["POST"])
@requires("emergency:write")
@idempotent
@blp.arguments(EmergencyAccessCreateSchema)
@blp.response(201, EmergencyAccessOpenedSchema)
def open_emergency_access(body: dict[str, Any]) -> Response:
    """Open an emergency access: decisions for its patient and practitioner permit until it ends."""
    refusal = _not_for_others(body["practitioner_id"])
    if refusal is not None:
        return refusal
    now = utcnow()

    def compute(session: Session) -> Answer:
        access = service.open_emergency_access(session, actor=actor(), now=now, **body)
        opened = {"id": access.id, "expires_at": format_instant(access.expires_at)}
        return Answer(201, opened)

    return write(compute)


@blp.route("/emergency-access/<uuid(strict=False):access_id>/end", methods=["POST"])
@requires("emergency:write")
@idempotent
@answers(404, 409)
@blp.arguments(EmergencyAccessEndSchema, required=False)
@blp.response(200, EmergencyAccessSchema)
def end_emergency_access(_body: dict[str, Any], access_id: uuid.UUID) -> Response:
    """End an open emergency access now (409 once it has ended or expired)."""
    now = utcnow()
    with state().database.reading() as session:
        found = session.get(EmergencyAccess, str(access_id))
        if found is None or found.organization != principal().organization:
            raise NotFound("No such emergency access.")
        refusal = _not_for_others(found.practitioner_id)
    if refusal is not None:
        return refusal

    def compute(session: Session) -> Answer:
        ended = service.end_emergency_access(
            session, actor=actor(), access_id=str(access_id), now=now
        )
        return Answer(200, service.wire(ended, now))

    return write(compute)


@blp.route("/emergency-access", methods=["GET"])
@requires("consents:read")
@blp.arguments(EmergencyAccessQueryArgsSchema, location="query")
@blp.response(200, EmergencyAccessListSchema)
def list_emergency_accesses(args: dict[str, Any]) -> Response:
    """A patient's emergency accesses in your organization, newest first."""
    now = utcnow()
    with state().database.reading() as session:
        accesses = service.list_emergency_accesses(
            session, organization=principal().organization, patient_id=args["patient_id"]
        )
        items = [service.wire(access, now) for access in accesses]
    return json_response({"items": items})
