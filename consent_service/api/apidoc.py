"""What the OpenAPI document says beyond the routes' own decorators.

Errors are documented as ``application/problem+json`` with their real shape
(one shared ``Problem`` schema, with the ``errors`` extension that validation
failures carry), so that a client (or schemathesis) knows what a 4xx looks
like. What every operation shares is added in one place,
:class:`CommonAnswersPlugin`, from facts the code states once: the scope that
``requires`` guards a view with, and the HTTP method (a body may be
malformed, too large or not JSON). What only some operations do is declared
at the view with :func:`idempotent`, :func:`conditional` and :func:`answers`.
The category and purpose vocabularies are configurable (``CONSENT_CATEGORIES``,
``CONSENT_PURPOSES``): each app documents its own as enums.
"""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any, TypeVar

from apispec import BasePlugin
from flask import Flask
from flask_smorest import Api
from flask_smorest.utils import prepare_response
from marshmallow import Schema, fields

from consent_service.api.schemas import EmergencyAccessEventSchema
from consent_service.config import Settings
from consent_service.http.problems import PROBLEM_JSON

F = TypeVar("F", bound=Callable[..., Any])

BEARER = "bearer"
SCOPE_EXTENSION = "x-scope"
REQUEST_ID = "X-Request-Id"
IDEMPOTENCY_KEY = "Idempotency-Key"
IF_MATCH = "If-Match"
IF_MATCH_OPTIONAL = "If-Match-Optional"

_DIGITS = {"type": "string", "pattern": "^[0-9]+$"}
HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID: {
        "description": "This request's id in the service's logs and audit trail; "
        "quote it when you report a problem.",
        "schema": {"type": "string"},
        "required": True,
    },
    "ETag": {
        "description": 'The consent version, quoted (such as "3"): send it back in If-Match.',
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
        "required": True,
    },
    "Location": {
        "description": "The path of the resource this request created.",
        "schema": {"type": "string", "format": "uri-reference"},
        "required": True,
    },
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": _DIGITS},
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: Bearer.",
        "schema": {"type": "string"},
        "required": True,
    },
    "Idempotent-Replayed": {
        "description": "Present (true) when this is the stored answer to an earlier request "
        "made with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Current-ETag": {
        "description": "The consent's current version, quoted, when the service knows it.",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    },
}
# Headers each error status carries on top of the request id.
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "WWW-Authenticate"},
    412: {"ETag": "Current-ETag"},
    429: {"Retry-After": "Retry-After"},
    503: {"Retry-After": "Retry-After"},
}
PARAMETERS: dict[str, dict[str, Any]] = {
    REQUEST_ID: {
        "name": REQUEST_ID,
        "description": "Optional: a correlation id of your own for this request; "
        "other than 1-64 letters, digits, '-', '_' or '.', it is ignored.",
        "schema": {"type": "string"},
    },
    IDEMPOTENCY_KEY: {
        "name": IDEMPOTENCY_KEY,
        "description": "Optional: retry this write safely. The first answer is stored for "
        "this key and replayed to a retry of the same request; the same key with another "
        "request answers 422.",
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    },
    IF_MATCH: {
        "name": IF_MATCH,
        "description": "The ETag of the version you read; 428 without it, 412 if the "
        "consent has changed since.",
        "required": True,
        "schema": {"type": "string", "pattern": '^(W/)?"[0-9]+"$'},
    },
    IF_MATCH_OPTIONAL: {
        "name": IF_MATCH,
        "description": "Optional: the ETag of the version you read; 412 if the consent "
        "has changed since.",
        "schema": {"type": "string", "pattern": '^(W/)?"[0-9]+"$'},
    },
}
# Why an operation may answer each status, where the code states it once.
_WHY = {
    400: "Malformed JSON, or a malformed header (Idempotency-Key, If-Match)",
    401: "No API key or access token, or one that is unknown, expired, revoked or refused",
    403: "The API key or access token lacks the scope this operation needs (or a "
    "practitioner's token asks about another practitioner)",
    404: "No such resource in your organization",
    409: "The consent is not active",
    412: "If-Match names a version that is not the current one, or the consent changed "
    "meanwhile; read it again",
    413: "The body is larger than the service accepts",
    415: "The body is not application/json",
    422: "Invalid fields: one entry per field in `errors`",
    428: "If-Match is required",
    429: "Over this client's budget for the operation: wait Retry-After seconds",
    503: "The database is not answering or the access could not be recorded: retry shortly",
}
SERVERS = [{"url": "/", "description": "This service (paths are relative to its root)"}]


class FieldErrorSchema(Schema):
    """One invalid input: where it was, which field, what is wrong with it."""

    location = fields.String(required=True, metadata={"description": "body, query, header or path"})
    field = fields.String(
        required=True, metadata={"description": "Dotted path of the field; `_` for the whole"}
    )
    detail = fields.String(required=True)


class ProblemSchema(Schema):
    """RFC 9457 problem details, as every error of this API is answered."""

    type = fields.String(required=True, metadata={"description": "about:blank"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    request_id = fields.String(metadata={"description": "As in the X-Request-Id header"})
    errors = fields.List(
        fields.Nested(FieldErrorSchema),
        metadata={"description": "Extension: one entry per invalid field (422, some 400)"},
    )


class ConsentApi(Api):
    """flask-smorest's Api with errors documented as problem+json and shared headers."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app: Flask, *, description: str) -> None:
        super().__init__(
            app,
            spec_kwargs={
                "info": {"description": description},
                "servers": SERVERS,
                "extra_plugins": [CommonAnswersPlugin(app)],
            },
        )
        self.spec.components.security_scheme(
            BEARER,
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key, or an OpenID Connect access token (JWT) from the "
                "configured issuer",
            },
        )
        self.spec.options["security"] = [{BEARER: []}]
        # flask-smorest registers it for its own pagination, which this API does not use.
        self.spec.components.schemas.pop("PaginationMetadata", None)
        # Named by an event's ``data`` (CloudEventSchema), which no view returns directly.
        self.spec.components.schema("EmergencyAccessEvent", schema=EmergencyAccessEventSchema)

    def _register_responses(self) -> None:
        for name, header in HEADERS.items():
            self.spec.components.header(name, header, lazy=True)
        for name, parameter in PARAMETERS.items():
            self.spec.components.parameter(name, "header", parameter, lazy=True)
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": _WHY.get(status, status.phrase)}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
                response["headers"] = {REQUEST_ID: REQUEST_ID, **_ERROR_HEADERS.get(status, {})}
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {
            "description": "Any other error (500 included)",
            "schema": self.ERROR_SCHEMA,
            "headers": {REQUEST_ID: REQUEST_ID},
        }
        prepare_response(response, self.spec, PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


class CommonAnswersPlugin(BasePlugin):
    """Adds to every operation what the code states once for all of them.

    - ``operationId``: the view's name in lowerCamelCase (``create_consent`` →
      ``createConsent``).
    - ``security``: the bearer API key for views that ``requires`` guards,
      with their scope (in ``x-scope`` and the description: an ``http``
      scheme has no scopes of its own), and 401, 403 and 429; an unguarded
      view says so with an empty list.
    - 400, 413 and 415 for methods with a body, 503 everywhere; each with
      problem+json.
    - What :func:`idempotent`, :func:`conditional` and :func:`answers` declared.
    - The ``X-Request-Id`` parameter and answer header.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        rule = kwargs.get("rule")
        if rule is None or not operations:
            return
        view = self.app.view_functions[rule.endpoint]
        for method, operation in operations.items():
            operation["operationId"] = _camel(rule.endpoint.rpartition(".")[2])
            parameters = operation.setdefault("parameters", [])
            responses = operation.setdefault("responses", {})
            statuses = [503, *getattr(view, "openapi_errors", ())]
            scope = getattr(view, "required_scope", None)
            operation["security"] = [{BEARER: []}] if scope is not None else []
            if scope is not None:
                operation[SCOPE_EXTENSION] = scope
                needs = f"Needs an API key with the `{scope}` scope."
                described = operation.get("description")
                operation["description"] = f"{described}\n\n{needs}" if described else needs
                statuses += [401, 403, 429]
            if method in ("post", "put", "patch"):
                statuses += [400, 413, 415]
            if_match = getattr(view, "openapi_if_match", None)
            if if_match is not None:
                parameters.append(IF_MATCH if if_match == "required" else IF_MATCH_OPTIONAL)
                statuses += [412, 428] if if_match == "required" else [412, 400]
            replayed = getattr(view, "openapi_idempotent", False)
            if replayed:
                parameters.append(IDEMPOTENCY_KEY)
                statuses.append(422)
            parameters.append(REQUEST_ID)
            for status in statuses:
                responses.setdefault(status, http.HTTPStatus(status).name)
            for status, response in responses.items():
                if not isinstance(response, dict):
                    continue
                headers = response.setdefault("headers", {})
                headers[REQUEST_ID] = REQUEST_ID
                if replayed and str(status).startswith("2"):
                    headers["Idempotent-Replayed"] = "Idempotent-Replayed"


def idempotent(view: F) -> F:
    """Declare that the view accepts ``Idempotency-Key`` (see ``api.writes.write``)."""
    view.openapi_idempotent = True  # type: ignore[attr-defined]
    return view


def conditional(*, required: bool) -> Callable[[F], F]:
    """Declare ``If-Match``: 412 when stale; 428 without it when ``required``, else 400."""

    def decorate(view: F) -> F:
        view.openapi_if_match = "required" if required else "optional"  # type: ignore[attr-defined]
        return view

    return decorate


def answers(*statuses: int) -> Callable[[F], F]:
    """Declare error statuses only this view answers (documented as problem+json)."""

    def decorate(view: F) -> F:
        view.openapi_errors = statuses  # type: ignore[attr-defined]
        return view

    return decorate


def document_vocabularies(api: Api, settings: Settings) -> None:
    """Document each vocabulary-checked field as an enum of this app's words."""

    def vocabulary_enum(_converter: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
        for validator in field.validators:
            kind = getattr(validator, "vocabulary", None)
            if kind is not None:
                return {"enum": list(getattr(settings, kind))}
        return {}

    api.ma_plugin.converter.add_attribute_function(vocabulary_enum)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)
