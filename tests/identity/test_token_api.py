"""Access tokens through the API, beside API keys: who acts, what is refused, what is recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service import create_app
from consent_service.audit import writer as audit_writer
from consent_service.config import OidcSettings, Settings
from consent_service.db.audit_models import AuditEntry
from consent_service.db.session import Database
from consent_service.identity.tokens import caller_id
from tests.conftest import KeyFactory, consent_body
from tests.identity.issuer import AUDIENCE, KeyServer, claims, make_key, sign
from tests.integration.api_support import assert_problem, create_consent


@pytest.fixture(scope="module")
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    server.keys = [make_key("api-key-1")]
    with server.running():
        yield server


@pytest.fixture
def client(settings: Settings, database: Database, key_server: KeyServer) -> FlaskClient:
    oidc = OidcSettings(issuer=key_server.url, audience=AUDIENCE, jwks_url=key_server.jwks_url)
    app = create_app(Settings(**{**vars(settings), "oidc": oidc}), database=database)
    return app.test_client()


def bearer(server: KeyServer, **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign(server.keys[0], claims(server.url, **overrides))}"}


def audit_objects(database: Database, action: str) -> list[dict[str, Any]]:
    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        rows = session.execute(
            select(AuditEntry.client_id, AuditEntry.outcome, AuditEntry.objects)
            .where(AuditEntry.action == action)
            .order_by(AuditEntry.id)
        ).all()
    return [
        {"client_id": client_id, "outcome": outcome, **json.loads(objects)}
        for client_id, outcome, objects in rows
    ]


def test_a_token_records_consents_in_its_organization_as_its_subject(
    client: FlaskClient, key_server: KeyServer, database: Database
) -> None:
    headers = bearer(key_server)
    created = create_consent(client, headers)
    assert created["organization"] == "practice-a"
    assert created["actor"] == "token:partner-app"
    read = client.get(f"/v1/consents/{created['id']}", headers=headers)
    assert read.status_code == 200
    [written] = audit_objects(database, "consent.granted")
    assert written["actor"] == "token:partner-app"
    assert written["client_id"] == caller_id(key_server.url, "partner-app")
    [reading] = audit_objects(database, "consent.read")
    assert reading["actor"] == "token:partner-app"


def test_another_organizations_token_sees_nothing(
    client: FlaskClient, key_server: KeyServer
) -> None:
    created = create_consent(client, bearer(key_server))
    other = bearer(key_server, org="practice-b", sub="other-app")
    assert_problem(client.get(f"/v1/consents/{created['id']}", headers=other), 404)


def test_a_token_without_the_scope_is_403(client: FlaskClient, key_server: KeyServer) -> None:
    headers = bearer(key_server, scope="decisions:read")
    response = client.post("/v1/consents", json=consent_body(), headers=headers)
    body = assert_problem(response, 403)
    assert "token lacks the `consents:write` scope" in body["detail"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": 1}, "token:expired"),
        ({"aud": "https://other.example"}, "token:invalid-aud"),
        ({"iss": "https://evil.example"}, "token:invalid-iss"),
        ({"org": None}, "token:missing-claim"),
    ],
    ids=["expired", "audience", "issuer", "no-organization"],
)
def test_a_refused_token_is_401_invalid_token_and_summed_up_with_its_reason(
    client: FlaskClient,
    key_server: KeyServer,
    database: Database,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    response = client.get("/v1/consents?patient_id=p", headers=bearer(key_server, **overrides))
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="consent-service", error="invalid_token"'
    )
    [summary] = audit_objects(database, "authentication")
    assert (summary["outcome"], summary["key"], summary["count"]) == ("unauthorized", reason, 1)


def test_api_keys_keep_working_beside_tokens(client: FlaskClient, api_key: KeyFactory) -> None:
    created = create_consent(client, api_key())
    assert created["actor"].startswith("client:")
    response = client.get("/v1/consents?patient_id=p", headers={"Authorization": "Bearer x"})
    assert_problem(response, 401)
    assert "invalid_token" not in response.headers["WWW-Authenticate"]


def test_idempotency_keys_are_per_token_caller(client: FlaskClient, key_server: KeyServer) -> None:
    body = consent_body()
    first_caller = {**bearer(key_server), "Idempotency-Key": "k-1"}
    first = client.post("/v1/consents", json=body, headers=first_caller)
    again = client.post("/v1/consents", json=body, headers=first_caller)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    second_caller = {**bearer(key_server, sub="another-app"), "Idempotency-Key": "k-1"}
    other = client.post("/v1/consents", json=body, headers=second_caller)
    assert other.status_code == 201
    assert "Idempotent-Replayed" not in other.headers
    assert other.get_json()["id"] != first.get_json()["id"]


def _question(practitioner_id: str, patient_id: str = "pat-1") -> dict[str, str]:
    return {
        "patient_id": patient_id,
        "practitioner_id": practitioner_id,
        "category": "radiographs",
        "purpose": "care-coordination",
    }


def test_a_practitioner_token_asks_decisions_for_itself_only(
    client: FlaskClient, key_server: KeyServer, database: Database
) -> None:
    consent = create_consent(client, bearer(key_server), practitioner_id="rpps:10003456789")
    itself = bearer(key_server, sub="dr-x", rpps="10003456789", scope="decisions:read")
    answer = client.post(
        "/v1/decisions",
        json=_question("rpps:10003456789", consent["patient_id"]),
        headers=itself,
    )
    assert answer.get_json()["decision"] == "permit"
    others = client.post("/v1/decisions", json=_question("rpps:10009999999"), headers=itself)
    assert "only ask decisions for `rpps:10003456789`" in assert_problem(others, 403)["detail"]
    batch = {"checks": [_question("rpps:10003456789"), _question("rpps:10009999999")]}
    assert_problem(client.post("/v1/decisions:batch", json=batch, headers=itself), 403)
    entries = audit_objects(database, "decision")
    assert {entry["acting_practitioner_id"] for entry in entries} == {"rpps:10003456789"}
    assert {entry["actor"] for entry in entries} == {"token:dr-x"}
    assert sorted(entry["outcome"] for entry in entries) == ["forbidden", "forbidden", "permit"]


def test_a_practitioner_token_opens_and_ends_emergency_access_for_itself_only(
    client: FlaskClient, key_server: KeyServer, database: Database
) -> None:
    itself = bearer(key_server, sub="dr-x", rpps="10003456789", scope="emergency:write")
    body = {
        "patient_id": "pat-1",
        "practitioner_id": "rpps:10003456789",
        "justification": "Unconscious patient admitted to the emergency room.",
    }
    opened = client.post("/v1/emergency-access", json=body, headers=itself)
    assert opened.status_code == 201, opened.get_json()
    colleague = {**body, "practitioner_id": "rpps:10009999999"}
    refused = client.post("/v1/emergency-access", json=colleague, headers=itself)
    assert "only open or end emergency access for" in assert_problem(refused, 403)["detail"]
    partner = bearer(key_server, scope="emergency:write")
    theirs = client.post("/v1/emergency-access", json=colleague, headers=partner).get_json()
    end_theirs = client.post(f"/v1/emergency-access/{theirs['id']}/end", headers=itself)
    assert_problem(end_theirs, 403)
    own = client.post(f"/v1/emergency-access/{opened.get_json()['id']}/end", headers=itself)
    assert own.get_json()["closed_by"] == "token:dr-x"
    [opening, _partner_opening] = audit_objects(database, "emergency-access.opened")
    assert opening["actor"] == "token:dr-x"
