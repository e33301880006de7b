"""POST /v1/consent-requests and GET /v1/consent-requests/{id}."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from tests.conftest import KeyFactory
from tests.web.conftest import Ask, request_body


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_create_answers_201_with_a_signed_form_link(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    before = datetime.now(UTC)
    response = client.post("/v1/consent-requests", json=request_body(), headers=auth)

    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "pending"
    assert response.headers["Location"] == f"/v1/consent-requests/{body['id']}"
    link = urlsplit(body["form_url"])
    assert link.scheme == "http" and link.path == "/consent/request"
    query = parse_qs(link.query)
    assert query["lang"] == ["fr"] and len(query["t"][0]) > 40
    assert body["id"] not in link.path, "the token goes in the query string, not the path"
    expires = _instant(body["expires_at"])
    assert (
        timedelta(days=7) - timedelta(seconds=5) < expires - before < timedelta(days=7, seconds=5)
    )
    assert urlsplit(body["manage_url"]).path == "/consent/mine"
    assert body["consent_id"] is None and body["answered_at"] is None


def test_get_shows_the_status_to_the_same_organization_only(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, ask: Ask
) -> None:
    created = ask(language="en", expires_in=3600)

    response = client.get(f"/v1/consent-requests/{created['id']}", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "pending" and body["language"] == "en"
    assert parse_qs(urlsplit(body["form_url"]).query)["lang"] == ["en"]
    assert body["expires_at"] == created["expires_at"]

    other = api_key(org="practice-b")
    assert client.get(f"/v1/consent-requests/{created['id']}", headers=other).status_code == 404
    assert client.get(f"/v1/consent-requests/{uuid.uuid4()}", headers=auth).status_code == 404


def test_scopes_are_enforced(client: FlaskClient, api_key: KeyFactory, ask: Ask) -> None:
    reader = api_key(scopes=("consents:read",))
    writer = api_key(scopes=("consents:write",))
    assert (
        client.post("/v1/consent-requests", json=request_body(), headers=reader).status_code == 403
    )
    assert client.post("/v1/consent-requests", json=request_body()).status_code == 401
    created = ask()
    assert client.get(f"/v1/consent-requests/{created['id']}", headers=writer).status_code == 403


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"surname": "Dupont"}, "surname"),
        ({"patient_id": "1 85 05 78 006 084 36"}, "patient_id"),
        ({"practitioner_name": "Dr\nMartin"}, "practitioner_name"),
        ({"practitioner_name": "   "}, "practitioner_name"),
        ({"categories": ["genome"]}, "categories.0"),
        ({"purposes": []}, "purposes"),
        ({"language": "de"}, "language"),
        ({"expires_in": 31 * 86400}, "expires_in"),
        ({"expires_in": 10}, "expires_in"),
        ({"expires_in": "3600"}, "expires_in"),
        ({"valid_for_days": 0}, "valid_for_days"),
        ({"valid_until": "2030-01-01T00:00:00Z"}, "valid_for_days"),
        ({"valid_for_days": None, "valid_until": "2000-01-01T00:00:00Z"}, "valid_until"),
    ],
)
def test_invalid_fields_are_422_one_entry_each(
    client: FlaskClient, auth: dict[str, str], overrides: dict[str, object], field: str
) -> None:
    response = client.post("/v1/consent-requests", json=request_body(**overrides), headers=auth)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in [entry["field"] for entry in response.get_json()["errors"]]


def test_valid_until_must_outlast_the_request(client: FlaskClient, auth: dict[str, str]) -> None:
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    body = request_body(valid_for_days=None, valid_until=soon)
    assert client.post("/v1/consent-requests", json=body, headers=auth).status_code == 422
    body["expires_in"] = 86400
    assert client.post("/v1/consent-requests", json=body, headers=auth).status_code == 201


def test_idempotency_key_records_one_request(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    body = request_body()
    headers = {**auth, "Idempotency-Key": "ask-once-1"}
    first = client.post("/v1/consent-requests", json=body, headers=headers)
    second = client.post("/v1/consent-requests", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(ConsentRequest)) == 1
    other = client.post("/v1/consent-requests", json=request_body(), headers=headers)
    assert other.status_code == 422


def test_the_service_keeps_no_contact_data(client: FlaskClient, auth: dict[str, str]) -> None:
    body = request_body(patient_email="someone@example.org")
    response = client.post("/v1/consent-requests", json=body, headers=auth)
    assert response.status_code == 422
    assert {column.name for column in ConsentRequest.__table__.columns}.isdisjoint(
        {"email", "phone", "patient_name", "address"}
    )
