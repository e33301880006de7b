"""Helpers shared by the API contract tests: record consents, read tables, check problems."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from consent_service.db.models import Consent, ConsentVersion, IdempotencyRecord, OutboxEvent
from consent_service.db.session import Database
from tests.conftest import REPO_ROOT, consent_body

EVENT_SCHEMAS = REPO_ROOT / "schemas" / "events"


def create_consent(
    client: FlaskClient, headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    """POST a consent (defaults from ``consent_body``) and return its body; fail unless 201."""
    response = client.post("/v1/consents", json=consent_body(**overrides), headers=headers)
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def amend(
    client: FlaskClient, headers: dict[str, str], consent: dict[str, Any], **changes: Any
) -> dict[str, Any]:
    """PATCH ``consent`` at its version; fail unless 200."""
    response = client.patch(
        f"/v1/consents/{consent['id']}",
        json=changes,
        headers={**headers, "If-Match": f'"{consent["version"]}"'},
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def revoke(
    client: FlaskClient, headers: dict[str, str], consent_id: str, reason: str = "withdrawn"
) -> dict[str, Any]:
    response = client.post(
        f"/v1/consents/{consent_id}/revoke", json={"reason": reason}, headers=headers
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def assert_problem(
    response: TestResponse, status: int, *fields: str, location: str | None = None
) -> dict[str, Any]:
    """The answer is an RFC 9457 problem with ``status``, naming each of ``fields``."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = response.get_json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert body["request_id"] == response.headers["X-Request-Id"]
    text = json.dumps(body)
    assert "Traceback" not in text and "sqlalchemy" not in text.lower()
    named = {entry["field"] for entry in body.get("errors", [])}
    for name in fields:
        assert name in named, (name, body)
    if location is not None:
        assert {entry["location"] for entry in body["errors"]} == {location}, body
    for entry in body.get("errors", []):
        assert set(entry) == {"location", "field", "detail"} and entry["detail"]
    return body


def row_counts(database: Database) -> dict[str, int]:
    """How many consents, versions, outbox rows and idempotency records exist."""
    with database.reading() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Consent, ConsentVersion, OutboxEvent, IdempotencyRecord)
        }


EMPTY = {
    "consents": 0,
    "consent_versions": 0,
    "outbox_events": 0,
    "idempotency_records": 0,
}


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wire(instant: datetime) -> str:
    """An instant as the API writes it."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@cache
def event_validators() -> dict[str, Draft202012Validator]:
    """One Draft 2020-12 validator per event type, with format checking on."""
    checker = Draft202012Validator.FORMAT_CHECKER
    assert not checker.conforms("yesterday", "date-time"), "install rfc3339-validator"
    validators = {}
    for path in sorted(Path(EVENT_SCHEMAS).glob("consent.*.v1.json")):
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        event_type = path.name.removesuffix(".v1.json")
        validators[event_type] = Draft202012Validator(schema, format_checker=checker)
    return validators


def assert_valid_event_data(event_type: str, data: dict[str, Any]) -> None:
    """``data`` satisfies the published schema of ``event_type`` (every error listed)."""
    validator = event_validators()[event_type]
    errors = sorted(validator.iter_errors(data), key=lambda error: list(error.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
