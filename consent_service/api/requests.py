"""Consent requests: practice software asks a patient through the web form.

The answer carries ``form_url``, a signed, expiring, single-use link, and
later ``manage_url``, the patient's "my consents" link. Both are signed
afresh at each read, so a caller can deliver them again. The caller delivers
them by its own channel, or, when mail is configured, gives the patient's
address in ``delivery`` and the service mails the link (``mail.queue``): the
answer then shows how delivery goes, never the address.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from flask import Response, url_for
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy.orm import Session

from consent_service.api.apidoc import answers, idempotent
from consent_service.api.schemas import Identifier, Instant, PlainText, _word_list
from consent_service.db.request_models import ConsentRequest
from consent_service.http.auth import requires
from consent_service.http.context import actor, principal, state
from consent_service.http.parsing import ConsentBlueprint
from consent_service.http.writes import Answer, json_response, write
from consent_service.mail import queue as mail_queue
from consent_service.mail.addresses import AddressError, mailbox
from consent_service.mail.sealing import Sealer
from consent_service.services import links, verification
from consent_service.services import requests as service
from consent_service.services.errors import InvalidConsent
from consent_service.timefmt import format_instant, utcnow

blp = ConsentBlueprint(
    "consent_requests",
    __name__,
    url_prefix="/v1",
    description="Consent requests answered by the patient on the web form",
)
MAX_VALID_FOR_DAYS = 3650


def _one_line(value: str) -> None:
    # splitlines() knows every line break (U+2028, NEL...), not only "\n": a name
    # shown to the patient also goes into mail headers, where a break is refused.
    if not value.strip() or value.splitlines() != [value] or "\t" in value:
        raise ValidationError("One line of text, not blank.")


class DisplayName(PlainText):
    """A name shown to the patient: one line, 1-128 characters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=128, **kwargs)
        self.validators.append(_one_line)


def _patient_address(value: str) -> None:
    try:
        mailbox(value)
    except AddressError as error:
        raise ValidationError(str(error)) from None


class DeliverySchema(Schema):
    email = fields.String(
        required=True,
        validate=_patient_address,
        metadata={
            "description": "The patient's address (RFC 5322, at most 254 characters); "
            "kept sealed until the confirmation is sent, then erased, never shown"
        },
    )


class DeliveryStatusSchema(Schema):
    channel = fields.String(metadata={"enum": ["email"]})
    status = fields.String(metadata={"enum": ["queued", "sent", "failed"]})
    attempts = fields.Integer()
    sent_at = fields.String(allow_none=True, metadata={"format": "date-time"})


class ConsentRequestCreateSchema(Schema):
    patient_id = Identifier(required=True)
    practitioner_id = Identifier(required=True)
    practitioner_name = DisplayName(required=True)
    practitioner_profession = DisplayName(load_default=None, allow_none=True)
    organization_name = DisplayName(
        load_default=None,
        allow_none=True,
        metadata={"description": "The practice as the patient knows it (default: the org id)"},
    )
    categories = _word_list("categories")
    purposes = _word_list("purposes")
    valid_until = Instant(
        load_default=None,
        allow_none=True,
        metadata={"description": "End of the consent; after expires_at"},
    )
    valid_for_days = fields.Integer(
        load_default=None,
        allow_none=True,
        strict=True,
        validate=validate.Range(min=1, max=MAX_VALID_FOR_DAYS),
        metadata={"description": "Or: duration counted from the patient's answer"},
    )
    language = fields.String(
        load_default=service.DEFAULT_LANGUAGE, validate=validate.OneOf(service.LANGUAGES)
    )
    expires_in = fields.Integer(
        load_default=int(service.DEFAULT_EXPIRES_IN.total_seconds()),
        strict=True,
        validate=validate.Range(
            min=int(service.MIN_EXPIRES_IN.total_seconds()),
            max=int(service.MAX_EXPIRES_IN.total_seconds()),
        ),
        metadata={"description": "Seconds the link stays valid (default 7 days, at most 30)"},
    )
    verification = fields.String(
        load_default=None,
        validate=validate.OneOf(["code"]),
        metadata={
            "description": "code: the answer carries verification_code, which the patient "
            "must type before the form shows anything; hand it over by another channel"
        },
    )
    delivery = fields.Nested(
        DeliverySchema,
        load_default=None,
        metadata={"description": "Mail form_url to the patient (when the service sends mail)"},
    )

    @validates_schema
    def one_duration(self, data: dict[str, Any], **_: Any) -> None:
        until, days = data.get("valid_until"), data.get("valid_for_days")
        if until is not None and days is not None:
            raise ValidationError("Give valid_until or valid_for_days, not both.", "valid_for_days")
        expires_in = data.get("expires_in")
        deadline = utcnow() + timedelta(seconds=expires_in) if isinstance(expires_in, int) else None
        if until is not None and deadline is not None and until <= deadline:
            raise ValidationError(
                "Must be later than the request's own deadline (now + expires_in).",
                "valid_until",
            )


class ConsentRequestSchema(Schema):
    id = fields.UUID()
    status = fields.String(
        metadata={"enum": ["pending", "granted", "refused", "expired", "locked"]}
    )
    form_url = fields.String(allow_none=True, metadata={"description": "While pending"})
    manage_url = fields.String(metadata={"description": "The patient's 'my consents' page"})
    expires_at = fields.String(metadata={"format": "date-time"})
    consent_id = fields.UUID(allow_none=True)
    organization = fields.String()
    organization_name = fields.String(allow_none=True)
    patient_id = fields.String()
    practitioner_id = fields.String()
    practitioner_name = fields.String()
    practitioner_profession = fields.String(allow_none=True)
    categories = fields.List(fields.String())
    purposes = fields.List(fields.String())
    valid_until = fields.String(allow_none=True, metadata={"format": "date-time"})
    valid_for_days = fields.Integer(allow_none=True)
    language = fields.String()
    created_at = fields.String(metadata={"format": "date-time"})
    answered_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    policy_version = fields.String(allow_none=True)
    verification = fields.String(
        allow_none=True, metadata={"enum": ["code", None], "description": "null: none asked"}
    )
    verification_code = fields.String(
        metadata={"description": "6 digits, in the 201 answer only (never again, not on a replay)"}
    )
    delivery = fields.Nested(
        DeliveryStatusSchema,
        allow_none=True,
        metadata={"description": "How the mailed invitation goes; null when not mailed"},
    )


@blp.route("/consent-requests", methods=["POST"])
@requires("consents:write")
@idempotent
@blp.arguments(ConsentRequestCreateSchema)
@blp.response(201, ConsentRequestSchema, headers={"Location": "Location"})
def create_consent_request(body: dict[str, Any]) -> Response:
    """Ask a patient for a consent; deliver the returned form_url, or let the service mail it."""
    now = utcnow()
    settings = state().settings
    delivery = body["delivery"]
    if delivery is not None and not settings.mail_configured:
        raise InvalidConsent(
            {"delivery": ["This service sends no mail (CONSENT_SMTP_URL); deliver form_url."]}
        )

    def compute(session: Session) -> Answer:
        created = service.create_request(
            session,
            actor=actor(),
            patient_id=body["patient_id"],
            practitioner_id=body["practitioner_id"],
            practitioner_name=body["practitioner_name"].strip(),
            practitioner_profession=_stripped(body["practitioner_profession"]),
            organization_name=_stripped(body["organization_name"]),
            categories=body["categories"],
            purposes=body["purposes"],
            valid_until=body["valid_until"],
            valid_for_days=body["valid_for_days"],
            language=body["language"],
            expires_in=timedelta(seconds=body["expires_in"]),
            now=now,
        )
        shown_once = {}
        if body["verification"] == "code":
            shown_once["verification_code"] = verification.issue_code(
                session, created, settings.secret_keys
            )
        if delivery is not None:
            mail_queue.queue_invitation(
                session,
                request_id=created.id,
                address=mailbox(delivery["email"]).addr_spec,
                sealer=Sealer(settings.mail_keys),
                now=now,
            )
        return Answer(
            201,
            _describe(created, now, mail_queue.deliveries(session, [created.id])),
            {"Location": f"/v1/consent-requests/{created.id}"},
            shown_once,
        )

    return write(compute)


@blp.route("/consent-requests/<uuid(strict=False):request_id>", methods=["GET"])
@requires("consents:read")
@answers(404)
@blp.response(200, ConsentRequestSchema)
def get_consent_request(request_id: uuid.UUID) -> Response:
    """A request's status and, once granted, the consent it recorded."""
    with state().database.reading() as session:
        found = service.get_request(
            session, organization=principal().organization, request_id=str(request_id)
        )
        deliveries = mail_queue.deliveries(session, [found.id])
    return json_response(_describe(found, utcnow(), deliveries))


def _describe(
    consent_request: ConsentRequest, now: datetime, deliveries: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    keys = state().settings.secret_keys
    status = service.effective_status(consent_request, now)
    text = (
        f"{consent_request.text_version}/{consent_request.text_language}"
        if consent_request.text_version
        else None
    )
    return {
        "id": consent_request.id,
        "status": status,
        "form_url": (
            _form_url(keys, consent_request.id, consent_request.language)
            if status == "pending"
            else None
        ),
        "manage_url": _manage_url(keys, consent_request.id, consent_request.language),
        "expires_at": format_instant(consent_request.expires_at),
        "consent_id": consent_request.consent_id,
        "organization": consent_request.organization,
        "organization_name": consent_request.organization_name,
        "patient_id": consent_request.patient_id,
        "practitioner_id": consent_request.practitioner_id,
        "practitioner_name": consent_request.practitioner_name,
        "practitioner_profession": consent_request.practitioner_profession,
        "categories": list(consent_request.categories),
        "purposes": list(consent_request.purposes),
        "valid_until": _instant(consent_request.valid_until),
        "valid_for_days": consent_request.valid_for_days,
        "language": consent_request.language,
        "created_at": format_instant(consent_request.created_at),
        "answered_at": _instant(consent_request.answered_at),
        "policy_version": text,
        "verification": "code" if consent_request.verification_code_hash else None,
        "delivery": deliveries.get(consent_request.id),
    }


def _instant(value: datetime | None) -> str | None:
    return format_instant(value) if value is not None else None


def _stripped(value: str | None) -> str | None:
    return value.strip() if value is not None else None


def _form_url(keys: Sequence[str], request_id: str, language: str) -> str:
    """The absolute link a practice sends to the patient to answer a request."""
    return _absolute("web.answer_form", t=links.sign(keys, links.ANSWER, request_id), lang=language)


def _manage_url(keys: Sequence[str], request_id: str, language: str) -> str:
    """The absolute link to the patient's "my consents" page."""
    return _absolute("web.my_consents", t=links.sign(keys, links.MANAGE, request_id), lang=language)


def _absolute(endpoint: str, **values: Any) -> str:
    """A link on ``CONSENT_PUBLIC_URL`` when set, else on the request's own host.

    Behind a proxy the Host header is whatever the caller sent; a configured
    public address keeps a patient's link pointing at the real service.
    """
    public_url = state().settings.public_url
    if public_url:
        return public_url + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)
