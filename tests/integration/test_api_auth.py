"""Bearer keys and scopes on every partner route: 401 without a valid key, 403 without the scope."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.models import ApiClient
from consent_service.db.session import Database
from consent_service.services.clients import check_key, create_client, revoke_client
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory
from tests.integration.api_support import EMPTY, assert_problem, create_consent, row_counts

SOME_ID = uuid.uuid4()
CHECK = {
    "patient_id": "pat-1",
    "practitioner_id": "rpps:1",
    "category": "billing",
    "purpose": "referral",
}
# (method, path, body, scope the route needs)
ROUTES = [
    ("post", "/v1/consents", {}, "consents:write"),
    ("get", "/v1/consents", None, "consents:read"),
    ("get", f"/v1/consents/{SOME_ID}", None, "consents:read"),
    ("patch", f"/v1/consents/{SOME_ID}", {"decision": "deny"}, "consents:write"),
    ("post", f"/v1/consents/{SOME_ID}/revoke", {}, "consents:write"),
    ("get", f"/v1/consents/{SOME_ID}/versions", None, "consents:read"),
    ("get", f"/v1/consents/{SOME_ID}/versions/1", None, "consents:read"),
    ("post", "/v1/decisions", CHECK, "decisions:read"),
    ("post", "/v1/decisions:batch", {"checks": [CHECK]}, "decisions:read"),
    ("post", "/v1/practitioners/rpps:1/revoke-all", {}, "consents:write"),
    ("get", "/v1/patients/pat-1/export", None, "consents:read"),
    ("get", "/v1/events", None, "events:read"),
]
ALL_SCOPES = ("consents:read", "consents:write", "decisions:read", "events:read")


def _call(
    client: FlaskClient, method: str, path: str, body: object, headers: dict[str, str]
) -> TestResponse:
    response: TestResponse = getattr(client, method)(
        path, json=body, headers={**headers, "If-Match": '"1"'}
    )
    return response


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_missing_or_bad_key_is_401(
    client: FlaskClient,
    api_key: KeyFactory,
    database: Database,
    method: str,
    path: str,
    body: object,
    scope: str,
) -> None:
    real = api_key()["Authorization"].removeprefix("Bearer ")
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": f"Basic {real}"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer csk_0123456789abcdef_not-the-secret"},
        {"Authorization": f"Bearer {real[:-1]}"},
        {"Authorization": f"Bearer {real}x"},
        {"Authorization": "Bearer " + "k" * 10_000},
        {"Authorization": "Bearer csk_\u00e9\u00e9"},
    ):
        response = _call(client, method, path, body, headers)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert row_counts(database) == EMPTY


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_missing_scope_is_403_and_the_scope_suffices(
    client: FlaskClient,
    api_key: KeyFactory,
    database: Database,
    method: str,
    path: str,
    body: object,
    scope: str,
) -> None:
    others = tuple(s for s in ALL_SCOPES if s != scope)
    response = _call(client, method, path, body, api_key(scopes=others))
    problem = assert_problem(response, 403)
    assert scope in problem["detail"]
    allowed = _call(client, method, path, body, api_key(scopes=(scope,)))
    assert allowed.status_code not in (401, 403), allowed.get_json()
    assert row_counts(database)["consents"] == 0


def test_scheme_is_case_insensitive(client: FlaskClient, api_key: KeyFactory) -> None:
    token = api_key()["Authorization"].removeprefix("Bearer ")
    assert (
        client.get("/v1/consents", headers={"Authorization": f"bearer {token}"}).status_code == 200
    )


def test_revoked_key_stops_within_the_key_cache_time(
    client: FlaskClient, database: Database, settings: Settings
) -> None:
    with database.transaction() as session:
        api_client, key = create_client(
            session, organization="practice-a", scopes=["consents:read"], name="t", now=utcnow()
        )
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/consents", headers=headers).status_code == 200  # now cached
    with database.transaction() as session:
        revoke_client(session, client_id=api_client.id, now=utcnow())
    revoked_at = time.monotonic()
    # Every request that starts later than the cache time after the revocation is refused.
    while True:
        started = time.monotonic()
        response = client.get("/v1/consents", headers=headers)
        if response.status_code == 401:
            break
        assert response.status_code == 200
        assert started < revoked_at + settings.api_key_cache_ms / 1000
    assert_problem(response, 401)


def test_revoked_key_stops_at_once_without_the_key_cache(
    settings: Settings, database: Database
) -> None:
    client = create_app(dataclasses.replace(settings, api_key_cache_ms=0), database=database)
    with database.transaction() as session:
        api_client, key = create_client(
            session, organization="practice-a", scopes=["consents:read"], name="t", now=utcnow()
        )
    headers = {"Authorization": f"Bearer {key}"}
    assert client.test_client().get("/v1/consents", headers=headers).status_code == 200
    with database.transaction() as session:
        revoke_client(session, client_id=api_client.id, now=utcnow())
    assert_problem(client.test_client().get("/v1/consents", headers=headers), 401)


def test_keys_are_stored_hashed(database: Database) -> None:
    with database.transaction() as session:
        api_client, key = create_client(
            session, organization="practice-a", scopes=["admin"], name="t", now=utcnow()
        )
    secret = key.split("_", 2)[2]
    with database.reading() as session:
        stored = session.get(ApiClient, api_client.id)
        assert stored is not None
        assert secret not in repr(vars(stored))
        assert check_key(session, api_key=key, now=utcnow()).principal is not None


def test_actor_names_the_calling_client(client: FlaskClient, database: Database) -> None:
    with database.transaction() as session:
        api_client, key = create_client(
            session, organization="practice-a", scopes=["consents:write"], name="t", now=utcnow()
        )
    created = create_consent(client, {"Authorization": f"Bearer {key}"})
    assert created["actor"] == f"client:{api_client.id}"
    assert created["organization"] == "practice-a"
