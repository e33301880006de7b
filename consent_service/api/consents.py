"""Consents: record, read, amend, revoke, version history, practitioner exit, export."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, request
from marshmallow import RAISE, ValidationError
from sqlalchemy.orm import Session

from consent_service.api.apidoc import answers, conditional, idempotent
from consent_service.api.schemas import (
    ConsentAmendSchema,
    ConsentCreateSchema,
    ConsentPageSchema,
    ConsentQueryArgsSchema,
    ConsentSchema,
    PatientExportSchema,
    RevokeAllResultSchema,
    RevokeSchema,
    validate_identifier,
)
from consent_service.http.auth import requires
from consent_service.http.context import actor, principal, state
from consent_service.http.parsing import ConsentBlueprint
from consent_service.http.problems import problem
from consent_service.http.writes import Answer, json_response, write
from consent_service.services import consents as service
from consent_service.services.cursors import decode_cursor, encode_cursor
from consent_service.timefmt import format_instant, utcnow

blp = ConsentBlueprint("consents", __name__, url_prefix="/v1", description="Patient consents")
MAX_VERSION = 2**31 - 1
# Header names refer to the shared definitions in the document (api.apidoc.HEADERS).
ETAG_HEADER = {"ETag": "ETag"}


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@blp.route("/consents", methods=["POST"])
@requires("consents:write")
@idempotent
@blp.arguments(ConsentCreateSchema)
@blp.response(201, ConsentSchema, headers={"Location": "Location", **ETAG_HEADER})
def create_consent(body: dict[str, Any]) -> Response:
    """Record a consent (version 1)."""
    now = utcnow()

    def compute(session: Session) -> Answer:
        created = service.grant_consent(
            session,
            actor=actor(),
            patient_id=body["patient_id"],
            practitioner_id=body["practitioner_id"],
            categories=body["categories"],
            purposes=body["purposes"],
            decision=body["decision"],
            valid_from=body["valid_from"],
            valid_until=body["valid_until"],
            collection=body["collection"],
            reason=body["reason"],
            now=now,
        )
        headers = {"Location": f"/v1/consents/{created['id']}", **_etag(1)}
        return Answer(201, created, headers)

    return write(compute)


@blp.route("/consents", methods=["GET"])
@requires("consents:read")
@blp.arguments(ConsentQueryArgsSchema, location="query", unknown=RAISE)
@blp.response(200, ConsentPageSchema)
def list_consents(args: dict[str, Any]) -> Response:
    """List consents (current versions), oldest first, by cursor."""
    after = decode_cursor(args["cursor"]) if "cursor" in args else None
    if after is False or after is True:
        return problem(
            422,
            "Validation failed",
            "cursor: not a cursor this API issued.",
            errors=[
                {"location": "query", "field": "cursor", "detail": "Not a cursor this API issued."}
            ],
        )
    with state().database.reading() as session:
        page, resume = service.list_consents(
            session,
            organization=principal().organization,
            patient_id=args.get("patient_id"),
            practitioner_id=args.get("practitioner_id"),
            status=args.get("status"),
            limit=args["limit"],
            after=after,
        )
    return json_response({"items": page, "next_cursor": encode_cursor(resume)})


@blp.route("/consents/<uuid(strict=False):consent_id>", methods=["GET"])
@requires("consents:read")
@answers(404)
@blp.response(200, ConsentSchema, headers=ETAG_HEADER)
def get_consent(consent_id: uuid.UUID) -> Response:
    """Read a consent at its current version."""
    with state().database.reading() as session:
        current = service.get_consent(
            session, organization=principal().organization, consent_id=str(consent_id)
        )
    return json_response(current, headers=_etag(current["version"]))


@blp.route("/consents/<uuid(strict=False):consent_id>", methods=["PATCH"])
@requires("consents:write")
@idempotent
@conditional(required=True)
@answers(404, 409)
@blp.arguments(ConsentAmendSchema)
@blp.response(200, ConsentSchema, headers=ETAG_HEADER)
def amend_consent(body: dict[str, Any], consent_id: uuid.UUID) -> Response:
    """Amend a consent; send the ETag you read in If-Match."""
    expected = _if_match()
    if isinstance(expected, Response):
        return expected
    assert expected is not None  # required=True never returns None
    reason = body.pop("reason", None)
    now = utcnow()

    def compute(session: Session) -> Answer:
        amended = service.amend_consent(
            session,
            actor=actor(),
            consent_id=str(consent_id),
            expected_version=expected,
            changes=body,
            reason=reason,
            now=now,
        )
        return Answer(200, amended, _etag(amended["version"]))

    return write(compute)


@blp.route("/consents/<uuid(strict=False):consent_id>/revoke", methods=["POST"])
@requires("consents:write")
@idempotent
@conditional(required=False)
@answers(404, 409)
@blp.arguments(RevokeSchema, required=False)
@blp.response(200, ConsentSchema, headers=ETAG_HEADER)
def revoke_consent(body: dict[str, Any], consent_id: uuid.UUID) -> Response:
    """Revoke an active consent (If-Match optional)."""
    expected = _if_match(required=False)
    if isinstance(expected, Response):
        return expected
    now = utcnow()

    def compute(session: Session) -> Answer:
        revoked = service.revoke_consent(
            session,
            actor=actor(),
            consent_id=str(consent_id),
            reason=body["reason"],
            now=now,
            expected_version=expected,
        )
        return Answer(200, revoked, _etag(revoked["version"]))

    return write(compute)


@blp.route("/consents/<uuid(strict=False):consent_id>/versions", methods=["GET"])
@requires("consents:read")
@answers(404)
@blp.response(200, ConsentSchema(many=True))
def list_versions(consent_id: uuid.UUID) -> Response:
    """Every version of a consent, oldest first."""
    with state().database.reading() as session:
        versions = service.list_versions(
            session, organization=principal().organization, consent_id=str(consent_id)
        )
    return json_response(versions)


@blp.route("/consents/<uuid(strict=False):consent_id>/versions/<int:number>", methods=["GET"])
@requires("consents:read")
@answers(404)
@blp.response(200, ConsentSchema, headers=ETAG_HEADER)
def get_version(consent_id: uuid.UUID, number: int) -> Response:
    """One version of a consent."""
    if not 1 <= number <= MAX_VERSION:
        return problem(404, "Not found", "No such consent version.")
    with state().database.reading() as session:
        version = service.get_version(
            session,
            organization=principal().organization,
            consent_id=str(consent_id),
            number=number,
        )
    return json_response(version, headers=_etag(version["version"]))


@blp.route("/practitioners/<path:practitioner_id>/revoke-all", methods=["POST"])
@requires("consents:write")
@idempotent
@answers(412)
@blp.arguments(RevokeSchema, required=False)
@blp.response(200, RevokeAllResultSchema)
def revoke_practitioner(body: dict[str, Any], practitioner_id: str) -> Response:
    """Revoke every active consent of this organization naming a practitioner who left."""
    invalid = _invalid_path_identifier("practitioner_id", practitioner_id)
    if invalid:
        return invalid
    now = utcnow()

    def compute(session: Session) -> Answer:
        revoked = service.revoke_practitioner_consents(
            session,
            actor=actor(),
            practitioner_id=practitioner_id,
            reason=body["reason"],
            now=now,
        )
        return Answer(200, {"practitioner_id": practitioner_id, "revoked": revoked})

    return write(compute)


@blp.route("/patients/<path:patient_id>/export", methods=["GET"])
@requires("consents:read")
@answers(422)
@blp.response(200, PatientExportSchema)
def export_patient(patient_id: str) -> Response:
    """Every consent of a patient with every version (GDPR right of access)."""
    invalid = _invalid_path_identifier("patient_id", patient_id)
    if invalid:
        return invalid
    now = utcnow()
    organization = principal().organization
    with state().database.reading() as session:
        consents = service.export_patient(session, organization=organization, patient_id=patient_id)
    body = {
        "patient_id": patient_id,
        "organization": organization,
        "exported_at": format_instant(now),
        "consents": consents,
    }
    return json_response(body)


def _if_match(required: bool = True) -> int | Response | None:
    header = request.headers.get("If-Match")
    if header is None:
        if required:
            return problem(
                428, "Precondition Required", "Send If-Match with the ETag of the version you read."
            )
        return None
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) < 3 or not (value.startswith('"') and value.endswith('"')):
        return problem(
            428 if required else 400,
            "Precondition Required" if required else "Bad Request",
            'If-Match must be one quoted version, such as "3".',
        )
    number = value[1:-1]
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses;
    # the length cap keeps int() away from its 4300-digit limit.
    is_number = number.isascii() and number.isdigit() and len(number) <= 10
    if not is_number or not 1 <= int(number) <= MAX_VERSION:
        return problem(412, "Precondition failed", "No such version of this consent.")
    return int(number)


def _invalid_path_identifier(name: str, value: str) -> Response | None:
    try:
        validate_identifier(value)
    except ValidationError as error:
        return problem(
            422,
            "Validation failed",
            f"{name}: invalid.",
            errors=[
                {"location": "path", "field": name, "detail": str(message)}
                for message in error.messages
            ],
        )
    return None
