"""End to end with a real OpenID provider: its client-credentials tokens against the API.

The service finds the provider's keys through discovery, as in production
when ``CONSENT_OIDC_JWKS_URL`` is left unset.
"""

from __future__ import annotations

import base64
import json

import pytest
from flask.testing import FlaskClient

from consent_service import create_app
from consent_service.config import OidcSettings, Settings
from consent_service.db.session import Database
from tests.conftest import consent_body
from tests.integration.api_support import assert_problem, create_consent
from tests.oidc.conftest import AUDIENCE, Provider


@pytest.fixture
def client(settings: Settings, database: Database, provider: Provider) -> FlaskClient:
    oidc = OidcSettings(issuer=provider.issuer, audience=AUDIENCE)
    app = create_app(Settings(**{**vars(settings), "oidc": oidc}), database=database)
    return app.test_client()


def test_a_partner_token_records_and_reads_consents_of_its_organization(
    client: FlaskClient, provider: Provider
) -> None:
    headers = provider.bearer("partner-a")
    created = create_consent(client, headers)
    assert (created["organization"], created["actor"]) == ("practice-a", "token:partner-a")
    read = client.get(f"/v1/consents/{created['id']}", headers=headers)
    assert read.status_code == 200
    listed = client.get(f"/v1/consents?patient_id={created['patient_id']}", headers=headers)
    assert [item["id"] for item in listed.get_json()["items"]] == [created["id"]]
    decision = client.post(
        "/v1/decisions",
        json={
            "patient_id": created["patient_id"],
            "practitioner_id": created["practitioner_id"],
            "category": "radiographs",
            "purpose": "care-coordination",
        },
        headers=headers,
    )
    assert decision.get_json()["decision"] == "permit"


def test_another_organizations_token_is_refused_its_consents(
    client: FlaskClient, provider: Provider
) -> None:
    created = create_consent(client, provider.bearer("partner-a"))
    other = provider.bearer("partner-b")
    assert_problem(client.get(f"/v1/consents/{created['id']}", headers=other), 404)
    listed = client.get(f"/v1/consents?patient_id={created['patient_id']}", headers=other)
    assert listed.get_json()["items"] == []


def test_the_scopes_granted_by_the_provider_are_the_token_scopes(
    client: FlaskClient, provider: Provider
) -> None:
    narrow = provider.bearer("partner-a", scope="consents:read")
    assert_problem(client.post("/v1/consents", json=consent_body(), headers=narrow), 403)
    reader = provider.bearer("reader-a")
    assert_problem(client.post("/v1/consents", json=consent_body(), headers=reader), 403)
    assert client.get("/v1/consents?patient_id=p", headers=reader).status_code == 200


def test_a_token_of_the_provider_altered_to_another_organization_is_refused(
    client: FlaskClient, provider: Provider
) -> None:
    head, payload, signature = provider.token("partner-a").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["org"] = "practice-b"
    altered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{head}.{altered}.{signature}"
    response = client.get(
        "/v1/consents?patient_id=p", headers={"Authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_practitioner_token_asks_for_itself_and_no_one_else(
    client: FlaskClient, provider: Provider
) -> None:
    created = create_consent(client, provider.bearer("partner-a"))
    question = {
        "patient_id": created["patient_id"],
        "practitioner_id": "rpps:10003456789",
        "category": "radiographs",
        "purpose": "care-coordination",
    }
    itself = provider.bearer("practitioner-a")
    assert client.post("/v1/decisions", json=question, headers=itself).get_json()["decision"] == (
        "permit"
    )
    colleague = {**question, "practitioner_id": "rpps:10009999999"}
    assert_problem(client.post("/v1/decisions", json=colleague, headers=itself), 403)
