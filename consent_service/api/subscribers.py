"""Enforcement receipts: subscribers acknowledge applied changes; who is behind.

``POST /v1/subscribers/acks`` is what the subscriber kit calls; the two reads
tell a practice whether a change is enforced everywhere and which of its
subscribers lag.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response
from marshmallow import Schema, fields, validate
from sqlalchemy.orm import Session

from consent_service.api.apidoc import answers, idempotent
from consent_service.api.schemas import Instant
from consent_service.http.auth import requires
from consent_service.http.context import principal, state
from consent_service.http.parsing import ConsentBlueprint
from consent_service.http.writes import Answer, json_response, write
from consent_service.receipt_metrics import REVOCATION_ENFORCED
from consent_service.services import receipts as service
from consent_service.timefmt import format_instant, utcnow

blp = ConsentBlueprint(
    "subscribers", __name__, url_prefix="/v1", description="Enforcement receipts"
)
MAX_VERSION = 2**31 - 1


class AckSchema(Schema):
    event_id = fields.UUID(required=True)
    consent_id = fields.UUID(required=True)
    version = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_VERSION))
    applied_at = Instant(required=True)


class AckBatchSchema(Schema):
    acks = fields.List(
        fields.Nested(AckSchema),
        required=True,
        validate=validate.Length(min=1, max=service.MAX_ACKS),
    )


class AckResultSchema(Schema):
    accepted = fields.Integer(metadata={"description": "Recorded, or already known"})
    refused = fields.Integer(
        metadata={
            "description": "Unknown consent, another organization's, or a version it never had"
        }
    )


class SubscriberStateSchema(Schema):
    subscriber_id = fields.String()
    name = fields.String()
    applied_version = fields.Integer(allow_none=True)
    applied_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    acknowledged_at = fields.String(allow_none=True, metadata={"format": "date-time"})


class EnforcementSchema(Schema):
    consent_id = fields.String()
    version = fields.Integer()
    enforced_everywhere = fields.Boolean()
    subscribers = fields.List(fields.Nested(SubscriberStateSchema))


class SubscriberLagSchema(Schema):
    subscriber_id = fields.String()
    name = fields.String()
    last_ack_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    unacknowledged = fields.Integer()
    oldest_unacknowledged_age_s = fields.Float(allow_none=True)


class SubscriberListSchema(Schema):
    items = fields.List(fields.Nested(SubscriberLagSchema))


@blp.route("/subscribers/acks", methods=["POST"])
@requires("events:ack")
@idempotent
@answers(422)
@blp.arguments(AckBatchSchema)
@blp.response(202, AckResultSchema)
def record_acks(body: dict[str, Any]) -> Response:
    """Acknowledge changes your software has durably applied (idempotent)."""
    caller = principal()
    acks = [
        service.Ack(
            event_id=str(ack["event_id"]),
            consent_id=str(ack["consent_id"]),
            version=ack["version"],
            applied_at=ack["applied_at"],
        )
        for ack in body["acks"]
    ]
    outcome = service.AckOutcome()

    def compute(session: Session) -> Answer:
        nonlocal outcome
        outcome = service.record_acks(
            session,
            subscriber_id=caller.client_id,
            organization=caller.organization,
            acks=acks,
            now=utcnow(),
        )
        return Answer(202, {"accepted": outcome.accepted, "refused": outcome.refused})

    response = write(compute)
    # Observed after the commit: a rolled-back batch enforced nothing.
    for seconds in outcome.enforced:
        REVOCATION_ENFORCED.labels(caller.organization).observe(seconds)
    return response


@blp.route("/consents/<uuid(strict=False):consent_id>/enforcement", methods=["GET"])
@requires("consents:read")
@answers(404)
@blp.response(200, EnforcementSchema)
def get_enforcement(consent_id: uuid.UUID) -> Response:
    """Which of your subscribers applied which version of a consent."""
    with state().database.reading() as session:
        found = service.enforcement(
            session, organization=principal().organization, consent_id=str(consent_id)
        )
    for item in found["subscribers"]:
        for name in ("applied_at", "acknowledged_at"):
            item[name] = _instant(item[name])
    return json_response(found)


@blp.route("/subscribers", methods=["GET"])
@requires("consents:read")
@blp.response(200, SubscriberListSchema)
def list_subscribers() -> Response:
    """Your subscribers and how far behind each one is."""
    now = utcnow()
    with state().database.reading() as session:
        lags = service.subscriber_lags(session, organization=principal().organization)
    items = [
        {
            "subscriber_id": lag.subscriber_id,
            "name": lag.name,
            "last_ack_at": _instant(lag.last_ack_at),
            "unacknowledged": lag.unacknowledged,
            "oldest_unacknowledged_age_s": (
                round(max((now - lag.oldest_unacknowledged_at).total_seconds(), 0.0), 3)
                if lag.oldest_unacknowledged_at
                else None
            ),
        }
        for lag in lags
    ]
    return json_response({"items": items})


def _instant(value: Any) -> str | None:
    return format_instant(value) if value is not None else None
