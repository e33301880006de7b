"""What the OpenAPI document says about errors and vocabularies.

Errors are documented as ``application/problem+json`` with their real shape,
so that a client (or schemathesis) knows what a 4xx looks like. The category
and purpose vocabularies are configurable (``CONSENT_CATEGORIES``,
``CONSENT_PURPOSES``): each app documents its own as enums.
"""

from __future__ import annotations

import http
from typing import Any

from flask_smorest import Api
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields

from consent_service.config import Settings
from consent_service.http.problems import PROBLEM_JSON


class FieldErrorSchema(Schema):
    location = fields.String()
    field = fields.String()
    detail = fields.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error of this API is answered."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    request_id = fields.String()
    errors = fields.List(fields.Nested(FieldErrorSchema))


class ConsentApi(Api):
    """flask-smorest's Api with errors documented as problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def document_vocabularies(api: Api, settings: Settings) -> None:
    """Document each vocabulary-checked field as an enum of this app's words."""

    def vocabulary_enum(_converter: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
        for validator in field.validators:
            kind = getattr(validator, "vocabulary", None)
            if kind is not None:
                return {"enum": list(getattr(settings, kind))}
        return {}

    api.ma_plugin.converter.add_attribute_function(vocabulary_enum)
