"""``GET /v1/audit``: an organization's audit entries, for its administrators."""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import RAISE, Schema, fields, validate

from consent_service import audit
from consent_service.api.schemas import Identifier, Instant
from consent_service.audit import writer as audit_writer
from consent_service.http.auth import requires
from consent_service.http.context import principal, state
from consent_service.http.parsing import ConsentBlueprint
from consent_service.http.writes import json_response

blp = ConsentBlueprint("audit", __name__, url_prefix="/v1", description="Audit log")

# How long a listing waits for this worker's queued entries (the caller's
# own earlier reads and decisions); past that it lists what is committed.
FLUSH_BEFORE_LISTING_S = 2.0

WORD = validate.Regexp(r"^[a-z0-9][a-z0-9.:_-]{0,47}$", error="A lowercase word (a-z 0-9 . : _ -).")


class AuditQueryArgsSchema(Schema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**62))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    since = Instant()
    until = Instant()
    action = fields.String(validate=WORD)
    outcome = fields.String(validate=WORD)
    client_id = fields.UUID()
    object_id = Identifier(metadata={"description": "A consent, patient or practitioner id"})


class AuditEntrySchema(Schema):
    id = fields.Integer()
    occurred_at = fields.String(metadata={"format": "date-time"})
    request_id = fields.String(allow_none=True)
    client_id = fields.String(allow_none=True)
    organization = fields.String(allow_none=True)
    action = fields.String()
    outcome = fields.String()
    status = fields.Integer(allow_none=True)
    objects = fields.Dict()
    shard = fields.String()
    seq = fields.Integer()
    hash = fields.String()


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    next_after = fields.Integer()


@blp.route("/audit", methods=["GET"])
@requires("admin")
@blp.arguments(AuditQueryArgsSchema, location="query", unknown=RAISE)
@blp.response(200, AuditPageSchema)
def list_audit(args: dict[str, Any]) -> Response:
    """Your organization's audit entries in append order, filtered; page with ``after``."""
    client_id = args.get("client_id")
    audit_writer.flush(FLUSH_BEFORE_LISTING_S)
    with state().database.read_only() as connection:
        items = audit.list_entries(
            connection,
            organization=principal().organization,
            limit=args["limit"],
            after_id=args["after"],
            since=args.get("since"),
            until=args.get("until"),
            action=args.get("action"),
            client_id=str(client_id) if client_id is not None else None,
            outcome=args.get("outcome"),
            object_id=args.get("object_id"),
        )
    next_after = items[-1]["id"] if items else args["after"]
    return json_response({"items": items, "next_after": next_after})
