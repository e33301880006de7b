"""Thin, whitelisted marshmallow schemas of the REST API.

Identifiers are opaque references: a restricted alphabet keeps names, free
text and control characters out, and a value shaped like a French social
security number (NIR) is refused, because a patient reference must never be
one. Schemas never query the database.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from marshmallow import (
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from consent_service.services.identifiers import IDENTIFIER, NIR_LIKE

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_REASON = 500


def validate_identifier(value: str) -> None:
    # fullmatch: with match, `$` also matches before a final newline, so
    # "pat-1\n" would pass as an identifier.
    if not IDENTIFIER.fullmatch(value):
        raise ValidationError(
            "1-128 characters: letters, digits and . _ : @ / + - (an opaque reference)."
        )
    if NIR_LIKE.match(value):
        raise ValidationError(
            "Looks like a social security number; use the practice's opaque reference."
        )


def _plain_text(value: str) -> None:
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn") and char not in "\n\t":
            raise ValidationError("Contains control or unassigned characters.")


class Identifier(fields.String):
    def __init__(self, **kwargs: Any) -> None:
        # Documented in the OpenAPI document too, so clients can check before sending.
        metadata = {
            "pattern": IDENTIFIER.pattern,
            "not": {"pattern": NIR_LIKE.pattern},
            **kwargs.pop("metadata", {}),
        }
        super().__init__(validate=validate_identifier, metadata=metadata, **kwargs)


class PlainText(fields.String):
    def __init__(self, max_length: int = MAX_REASON, min_length: int = 0, **kwargs: Any) -> None:
        length = validate.Length(min=min_length or None, max=max_length)
        super().__init__(validate=[length, _plain_text], **kwargs)


class Instant(fields.AwareDateTime):
    """An ISO 8601 instant with an offset, between 1900 and 9000, normalised to UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or len(value) > 40:
            raise ValidationError("Not an ISO 8601 date-time with an offset.")
        parsed = super()._deserialize(value, attr, data, **kwargs)
        try:
            instant = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValidationError("Out of range.") from None
        if not EARLIEST <= instant < LATEST:
            raise ValidationError("Must be between 1900 and 9000.")
        return instant


def _vocabulary(kind: str) -> validate.Validator:
    def check(value: str) -> None:
        allowed = current_app.extensions["consent_service"].settings.__getattribute__(kind)
        if value not in allowed:
            raise ValidationError(f"Must be one of: {', '.join(allowed)}.")

    check.vocabulary = kind  # type: ignore[attr-defined]  # read by api.apidoc
    return check  # type: ignore[return-value]


def _word_list(kind: str) -> fields.List:
    return fields.List(
        fields.String(validate=[validate.Length(max=64), _vocabulary(kind)]),
        required=True,
        validate=validate.Length(min=1, max=32),
    )


class CollectionSchema(Schema):
    method = fields.String(
        required=True,
        validate=validate.OneOf(["web-form", "paper", "email", "verbal", "partner-api"]),
    )
    evidence_ref = PlainText(max_length=256, load_default=None, allow_none=True)
    policy_version = PlainText(max_length=64, load_default=None, allow_none=True)


class ConsentCreateSchema(Schema):
    patient_id = Identifier(required=True)
    practitioner_id = Identifier(required=True)
    categories = _word_list("categories")
    purposes = _word_list("purposes")
    decision = fields.String(required=True, validate=validate.OneOf(["permit", "deny"]))
    valid_from = Instant(load_default=None, allow_none=True)
    valid_until = Instant(load_default=None, allow_none=True)
    collection = fields.Nested(CollectionSchema, required=True)
    reason = PlainText(load_default=None, allow_none=True)

    @validates_schema
    def validity_order(self, data: dict[str, Any], **_: Any) -> None:
        start, end = data.get("valid_from"), data.get("valid_until")
        if start is not None and end is not None and end <= start:
            raise ValidationError("Must be later than valid_from.", "valid_until")


class ConsentAmendSchema(Schema):
    categories = fields.List(
        fields.String(validate=[validate.Length(max=64), _vocabulary("categories")]),
        validate=validate.Length(min=1, max=32),
    )
    purposes = fields.List(
        fields.String(validate=[validate.Length(max=64), _vocabulary("purposes")]),
        validate=validate.Length(min=1, max=32),
    )
    decision = fields.String(validate=validate.OneOf(["permit", "deny"]))
    valid_from = Instant()
    valid_until = Instant(allow_none=True)
    collection = fields.Nested(CollectionSchema)
    reason = PlainText(allow_none=True)

    @validates_schema
    def not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not set(data) - {"reason"}:
            raise ValidationError("Give at least one field to amend.", "_schema")


class RevokeSchema(Schema):
    reason = PlainText(load_default=None, allow_none=True)


class CollectionOutSchema(Schema):
    method = fields.String()
    evidence_ref = fields.String(allow_none=True)
    policy_version = fields.String(allow_none=True)


class ConsentSchema(Schema):
    """A consent at one version: the snapshot plus the change that produced it."""

    id = fields.UUID()
    organization = fields.String()
    patient_id = fields.String()
    practitioner_id = fields.String()
    categories = fields.List(fields.String())
    purposes = fields.List(fields.String())
    decision = fields.String()
    valid_from = fields.String(metadata={"format": "date-time"})
    valid_until = fields.String(allow_none=True, metadata={"format": "date-time"})
    collection = fields.Nested(CollectionOutSchema)
    status = fields.String()
    version = fields.Integer()
    created_at = fields.String(metadata={"format": "date-time"})
    updated_at = fields.String(metadata={"format": "date-time"})
    change = fields.String()
    actor = fields.String()
    reason = fields.String(allow_none=True)
    recorded_at = fields.String(metadata={"format": "date-time"})


class ConsentPageSchema(Schema):
    items = fields.List(fields.Nested(ConsentSchema))
    next_cursor = fields.String(allow_none=True)


class ConsentQueryArgsSchema(Schema):
    patient_id = Identifier()
    practitioner_id = Identifier()
    status = fields.String(validate=validate.OneOf(["active", "revoked", "expired"]))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class ExportedConsentSchema(Schema):
    id = fields.UUID()
    current = fields.Nested(ConsentSchema)
    versions = fields.List(fields.Nested(ConsentSchema))


class PatientExportSchema(Schema):
    patient_id = fields.String()
    organization = fields.String()
    exported_at = fields.String(metadata={"format": "date-time"})
    consents = fields.List(fields.Nested(ExportedConsentSchema))


class RevokeAllResultSchema(Schema):
    practitioner_id = fields.String()
    revoked = fields.List(fields.Nested(ConsentSchema))


class DecisionQuestionSchema(Schema):
    patient_id = Identifier(required=True)
    practitioner_id = Identifier(required=True)
    category = fields.String(
        required=True, validate=[validate.Length(max=64), _vocabulary("categories")]
    )
    purpose = fields.String(
        required=True, validate=[validate.Length(max=64), _vocabulary("purposes")]
    )
    at = Instant(load_default=None, allow_none=True)


class DecisionSchema(Schema):
    decision = fields.String()
    consent_id = fields.String(allow_none=True)
    version = fields.Integer(allow_none=True)
    reason = fields.String()
    # Only when an open emergency access answered (reason ``emergency-access``).
    emergency_access_id = fields.String()


MAX_BATCH = 500


class DecisionBatchSchema(Schema):
    checks = fields.List(
        fields.Nested(DecisionQuestionSchema),
        required=True,
        validate=validate.Length(min=1, max=MAX_BATCH),
    )


class DecisionBatchResultSchema(Schema):
    results = fields.List(fields.Nested(DecisionSchema))


class EventQueryArgsSchema(Schema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**62))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class CloudEventSchema(Schema):
    specversion = fields.String()
    id = fields.String()
    type = fields.String()
    source = fields.String()
    subject = fields.String()
    time = fields.String(metadata={"format": "date-time"})
    datacontenttype = fields.String()
    position = fields.Integer()
    # A consent at one version (consent.granted ... consent.expired), or an
    # emergency access (consent.emergency-access), as its ``type`` says.
    data = fields.Raw(
        metadata={
            "oneOf": [
                {"$ref": "#/components/schemas/Consent"},
                {"$ref": "#/components/schemas/EmergencyAccessEvent"},
            ]
        }
    )


class EventPageSchema(Schema):
    items = fields.List(fields.Nested(CloudEventSchema))
    next_after = fields.Integer()


class EmergencyAccessCreateSchema(Schema):
    patient_id = Identifier(required=True)
    practitioner_id = Identifier(required=True)
    justification = PlainText(max_length=1000, min_length=20, required=True)
    duration_minutes = fields.Integer(
        strict=True, load_default=60, validate=validate.Range(min=1, max=240)
    )

    @validates("justification")
    def meaningful(self, value: str, **_: Any) -> None:
        if len(value.strip()) < 20:
            raise ValidationError("At least 20 characters that are not blank.")


class EmergencyAccessEndSchema(Schema):
    """Ending takes no fields; an empty object (or no body) is all it accepts."""


class EmergencyAccessOpenedSchema(Schema):
    id = fields.UUID()
    expires_at = fields.String()


class EmergencyAccessSchema(Schema):
    """An emergency access: who, for whom, why, and its window."""

    id = fields.UUID()
    patient_id = fields.String()
    practitioner_id = fields.String()
    justification = fields.String()
    status = fields.String(validate=validate.OneOf(["open", "ended", "expired"]))
    opened_by = fields.String()
    opened_at = fields.String()
    expires_at = fields.String()
    closed_at = fields.String(allow_none=True)
    closed_by = fields.String(allow_none=True)


class EmergencyAccessQueryArgsSchema(Schema):
    patient_id = Identifier(required=True)


class EmergencyAccessListSchema(Schema):
    items = fields.List(fields.Nested(EmergencyAccessSchema))


class EmergencyAccessEventSchema(Schema):
    """The data of a ``consent.emergency-access`` event (schemas/events)."""

    id = fields.UUID()
    organization = fields.String()
    patient_id = fields.String()
    practitioner_id = fields.String()
    status = fields.String(validate=validate.OneOf(["open", "ended", "expired"]))
    version = fields.Integer()
    change = fields.String(validate=validate.OneOf(["opened", "ended", "expired"]))
    opened_by = fields.String()
    opened_at = fields.String()
    expires_at = fields.String()
    closed_at = fields.String(allow_none=True)
    closed_by = fields.String(allow_none=True)
