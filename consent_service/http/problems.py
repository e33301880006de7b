"""Every error as ``application/problem+json`` (RFC 9457).

No answer carries a stack trace, a version string or SQL: unexpected
exceptions are logged with the request id and answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, g, json
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from consent_service.services.errors import (
    Conflict,
    DomainError,
    InvalidConsent,
    NotFound,
    StaleVersion,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Conflict: 409,
    StaleVersion: 412,
    InvalidConsent: 422,
}


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    return response


def field_errors(messages: Any, location: str = "body", prefix: str = "") -> list[dict[str, str]]:
    """Flatten marshmallow's nested messages into one entry per bad field."""
    entries: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for name, inner in messages.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            entries.extend(field_errors(inner, location, path))
    elif isinstance(messages, list) and all(isinstance(item, str) for item in messages):
        field = prefix or "_"
        entries.extend({"location": location, "field": field, "detail": m} for m in messages)
    elif isinstance(messages, list):
        for item in messages:
            entries.extend(field_errors(item, location, prefix))
    else:
        entries.append({"location": location, "field": prefix or "_", "detail": str(messages)})
    return entries


_LOCATIONS = {"json": "body", "query": "query", "headers": "header", "view_args": "path"}


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 422 and messages:
        errors: list[dict[str, str]] = []
        for location, fields in messages.items():
            errors.extend(field_errors(fields, _LOCATIONS.get(location, location)))
        return problem(422, "Validation failed", "One or more fields are invalid.", errors=errors)
    if messages:
        errors = []
        for location, fields in messages.items():
            errors.extend(field_errors(fields, _LOCATIONS.get(location, location)))
        return problem(status, error.name, "; ".join(e["detail"] for e in errors), errors=errors)
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return problem(413, error.name, f"The body is over the {limit} bytes this service accepts.")
    response = problem(status, error.name, _safe_description(error))
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        original = error.get_response().headers.get(header)
        if original:
            response.headers[header] = original
    return response


def _safe_description(error: HTTPException) -> str | None:
    data = getattr(error, "data", None) or {}
    return data.get("message") or error.description


def handle_domain_error(error: DomainError) -> Response:
    status = _DOMAIN_STATUS.get(type(error), 400)
    if isinstance(error, InvalidConsent):
        errors = [
            {"location": "body", "field": name, "detail": message}
            for name, messages in error.errors.items()
            for message in messages
        ]
        return problem(422, error.title, error.detail, errors=errors)
    response = problem(status, error.title, error.detail)
    if isinstance(error, StaleVersion) and error.current_version is not None:
        response.headers["ETag"] = f'"{error.current_version}"'
    return response


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error request_id=%s", g.get("request_id"))
    return problem(500, "Internal Server Error", "The error was logged; quote the request id.")


def database_unavailable(error: SQLAlchemyError) -> bool:
    """The database is down, slow or unreachable (not a bug in a statement)."""
    return isinstance(error, (OperationalError, InterfaceError, PoolTimeout)) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def handle_database_error(error: SQLAlchemyError) -> Response:
    """A database that is down, slow or unreachable: 503 at once, never a 500 with SQL."""
    if not database_unavailable(error):
        return handle_unexpected(error)
    log.warning(
        "database unavailable request_id=%s error=%s", g.get("request_id"), type(error).__name__
    )
    response = problem(503, "Service Unavailable", "The database is not answering; retry shortly.")
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


DATABASE_RETRY_AFTER_S = 5
