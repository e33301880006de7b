"""Every endpoint against every way of being refused; nothing changes when refused."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from consent_service.db.audit_models import ApiKey
from consent_service.db.models import Consent, ConsentVersion, OutboxEvent
from consent_service.db.session import Database
from consent_service.services.clients import SCOPES, create_client, revoke_client, rotate_key
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory, consent_body
from tests.security.conftest import audit_rows

PRACTITIONER = "rpps:10003456789"
QUESTION = {
    "patient_id": "{patient}",
    "practitioner_id": PRACTITIONER,
    "category": "radiographs",
    "purpose": "care-coordination",
}

ACK = {
    "event_id": "4f6c1c1e-8d0b-4d35-9a53-0d7e3f3b8a11",
    "consent_id": "{consent}",
    "version": 1,
    "applied_at": "2026-01-01T00:00:00Z",
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    rule: str
    scope: str
    path: str
    body: Any = None
    if_match: bool = False
    # Names an object of one organization: another organization gets 404.
    is_object: bool = False


ENDPOINTS = [
    Endpoint("POST", "/v1/consents", "consents:write", "/v1/consents", "create"),
    Endpoint("GET", "/v1/consents", "consents:read", "/v1/consents"),
    Endpoint(
        "GET",
        "/v1/consents/<uuid(strict=False):consent_id>",
        "consents:read",
        "/v1/consents/{consent}",
        is_object=True,
    ),
    Endpoint(
        "PATCH",
        "/v1/consents/<uuid(strict=False):consent_id>",
        "consents:write",
        "/v1/consents/{consent}",
        {"purposes": ["referral"]},
        if_match=True,
        is_object=True,
    ),
    Endpoint(
        "POST",
        "/v1/consents/<uuid(strict=False):consent_id>/revoke",
        "consents:write",
        "/v1/consents/{consent}/revoke",
        {"reason": None},
        is_object=True,
    ),
    Endpoint(
        "GET",
        "/v1/consents/<uuid(strict=False):consent_id>/versions",
        "consents:read",
        "/v1/consents/{consent}/versions",
        is_object=True,
    ),
    Endpoint(
        "GET",
        "/v1/consents/<uuid(strict=False):consent_id>/versions/<int:number>",
        "consents:read",
        "/v1/consents/{consent}/versions/1",
        is_object=True,
    ),
    Endpoint(
        "POST",
        "/v1/practitioners/<path:practitioner_id>/revoke-all",
        "consents:write",
        f"/v1/practitioners/{PRACTITIONER}/revoke-all",
        {"reason": None},
    ),
    Endpoint(
        "GET",
        "/v1/patients/<path:patient_id>/export",
        "consents:read",
        "/v1/patients/{patient}/export",
    ),
    Endpoint("POST", "/v1/decisions", "decisions:read", "/v1/decisions", QUESTION),
    Endpoint(
        "POST",
        "/v1/decisions:batch",
        "decisions:read",
        "/v1/decisions:batch",
        {"checks": [QUESTION]},
    ),
    Endpoint("GET", "/v1/events", "events:read", "/v1/events"),
    Endpoint(
        "POST",
        "/v1/subscribers/acks",
        "events:ack",
        "/v1/subscribers/acks",
        {"acks": [ACK]},
    ),
    Endpoint("GET", "/v1/subscribers", "consents:read", "/v1/subscribers"),
    Endpoint(
        "GET",
        "/v1/consents/<uuid(strict=False):consent_id>/enforcement",
        "consents:read",
        "/v1/consents/{consent}/enforcement",
        is_object=True,
    ),
    Endpoint("GET", "/v1/audit", "admin", "/v1/audit"),
    Endpoint(
        "POST",
        "/v1/consent-requests",
        "consents:write",
        "/v1/consent-requests",
        {
            "patient_id": "{patient}",
            "practitioner_id": PRACTITIONER,
            "practitioner_name": "Dr Martin",
            "categories": ["radiographs"],
            "purposes": ["referral"],
        },
    ),
    Endpoint(
        "GET",
        "/v1/consent-requests/<uuid(strict=False):request_id>",
        "consents:read",
        "/v1/consent-requests/{request}",
        is_object=True,
    ),
    Endpoint(
        "POST",
        "/v1/emergency-access",
        "emergency:write",
        "/v1/emergency-access",
        {
            "patient_id": "{patient}",
            "practitioner_id": PRACTITIONER,
            "justification": "Unconscious patient admitted to the emergency room.",
        },
    ),
    Endpoint(
        "POST",
        "/v1/emergency-access/<uuid(strict=False):access_id>/end",
        "emergency:write",
        "/v1/emergency-access/{emergency}/end",
        is_object=True,
    ),
    Endpoint(
        "GET",
        "/v1/emergency-access",
        "consents:read",
        "/v1/emergency-access?patient_id={patient}",
    ),
]
IDS = [f"{e.method} {e.path}" for e in ENDPOINTS]


@dataclass
class World:
    """One consent and one consent request of practice-a, and a way to call endpoints."""

    client: FlaskClient
    database: Database
    consent: str
    patient: str
    request: str
    emergency: str

    def call(self, endpoint: Endpoint, headers: dict[str, str]) -> Any:
        headers = dict(headers)
        if endpoint.if_match:
            headers["If-Match"] = '"1"'
        body = consent_body(patient_id=self.patient) if endpoint.body == "create" else endpoint.body
        return self.client.open(
            self._fill(endpoint.path),
            method=endpoint.method,
            json=self._fill(body) if body is not None else None,
            headers=headers,
        )

    def _fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.format(
                consent=self.consent,
                patient=self.patient,
                request=self.request,
                emergency=self.emergency,
            )
        if isinstance(value, dict):
            return {key: self._fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._fill(item) for item in value]
        return value

    def state(self) -> tuple[Any, ...]:
        """Everything a refused call must leave as it was."""
        with self.database.reading() as session:
            consents = session.execute(
                select(Consent.id, Consent.version, Consent.status, Consent.purposes)
            ).all()
            counts = [
                session.scalar(select(func.count()).select_from(table))
                for table in (ConsentVersion, OutboxEvent)
            ]
        return (sorted(map(tuple, consents)), counts)


@pytest.fixture
def world(client: FlaskClient, auth: dict[str, str], database: Database) -> World:
    created = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()
    requested = client.post(
        "/v1/consent-requests",
        json={
            "patient_id": created["patient_id"],
            "practitioner_id": PRACTITIONER,
            "practitioner_name": "Dr Martin",
            "categories": ["radiographs"],
            "purposes": ["referral"],
        },
        headers=auth,
    )
    assert requested.status_code == 201, requested.get_json()
    opened = client.post(
        "/v1/emergency-access",
        json={
            "patient_id": created["patient_id"],
            "practitioner_id": PRACTITIONER,
            "justification": "Unconscious patient admitted to the emergency room.",
        },
        headers=auth,
    )
    assert opened.status_code == 201, opened.get_json()
    return World(
        client,
        database,
        created["id"],
        created["patient_id"],
        requested.get_json()["id"],
        opened.get_json()["id"],
    )


def test_the_matrix_covers_every_api_endpoint(app: Flask) -> None:
    routes = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == {(e.method, e.rule) for e in ENDPOINTS}


def _key(database: Database, **changes: Any) -> dict[str, str]:
    """A key of practice-a with every scope, then altered in the database."""
    with database.transaction() as session:
        client, key = create_client(
            session, organization="practice-a", scopes=list(SCOPES), name="t", now=utcnow()
        )
        if changes.pop("revoke_client", False):
            revoke_client(session, client_id=client.id, now=utcnow())
        if changes:
            session.execute(update(ApiKey).where(ApiKey.client_id == client.id).values(**changes))
    return {"Authorization": f"Bearer {key}"}


def _refusals(database: Database) -> dict[str, dict[str, str]]:
    good = _key(database)["Authorization"]
    prefix = good.split("_")[1]
    return {
        "no key": {},
        "not bearer": {"Authorization": good.replace("Bearer", "Basic")},
        "garbage": {"Authorization": "Bearer garbage"},
        "unknown prefix": {"Authorization": "Bearer csk_0123456789abcdef_secret"},
        "bad secret": {"Authorization": f"Bearer csk_{prefix}_not-the-secret"},
        "expired key": _key(database, expires_at=utcnow() - timedelta(seconds=1)),
        "revoked key": _key(database, revoked_at=utcnow()),
        "revoked client": _key(database, revoke_client=True),
    }


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_no_valid_key_is_401_and_changes_nothing(world: World, endpoint: Endpoint) -> None:
    refusals = _refusals(world.database)
    before = world.state()
    for name, headers in refusals.items():
        response = world.call(endpoint, headers)
        assert response.status_code == 401, name
        assert response.mimetype == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert world.consent not in response.get_data(as_text=True)
    assert world.state() == before
    # Refused keys are summed up per source, reason and window (``api.refusals``).
    refused = [row for row in audit_rows(world.database) if row.outcome == "unauthorized"]
    assert sum(json.loads(row.objects)["count"] for row in refused) == len(refusals)
    assert len(refused) < len(refusals)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=IDS)
def test_missing_scope_is_403_and_changes_nothing(
    world: World, endpoint: Endpoint, api_key: KeyFactory
) -> None:
    others = tuple(scope for scope in SCOPES if scope != endpoint.scope)
    before = world.state()
    response = world.call(endpoint, api_key(scopes=others))
    assert response.status_code == 403
    assert endpoint.scope in response.get_json()["detail"]
    assert world.state() == before
    assert audit_rows(world.database, outcome="forbidden")
    assert world.call(endpoint, api_key(scopes=(endpoint.scope,))).status_code < 300


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.is_object], ids=str)
def test_another_organizations_object_is_a_plain_404(
    world: World, endpoint: Endpoint, api_key: KeyFactory
) -> None:
    stranger = api_key(org="practice-b")
    before = world.state()
    theirs = world.call(endpoint, stranger)
    missing = World(
        world.client, world.database, str(_uuid()), world.patient, str(_uuid()), str(_uuid())
    )
    nothing = missing.call(endpoint, stranger)
    assert theirs.status_code == nothing.status_code == 404
    strip = {"request_id"}
    assert {k: v for k, v in theirs.get_json().items() if k not in strip} == {
        k: v for k, v in nothing.get_json().items() if k not in strip
    }
    assert world.state() == before
    assert [row.organization for row in audit_rows(world.database, outcome="not-found")] == [
        "practice-b",
        "practice-b",
    ]


@pytest.mark.parametrize(
    "path",
    ["/v1/consents?patient_id={patient}", "/v1/patients/{patient}/export", "/v1/events"],
)
def test_another_organizations_lists_are_empty(
    world: World, path: str, api_key: KeyFactory
) -> None:
    response = world.client.get(world._fill(path), headers=api_key(org="practice-b"))
    assert response.status_code == 200
    assert world.consent not in response.get_data(as_text=True)
    decided = world.client.post(
        "/v1/decisions", json=world._fill(QUESTION), headers=api_key(org="practice-b")
    ).get_json()
    assert decided == {
        "decision": "deny",
        "consent_id": None,
        "version": None,
        "reason": "no-consent",
    }


MASS_ASSIGNMENT = {
    "status": "revoked",
    "version": 7,
    "organization": "practice-b",
    "created_at": "2020-01-01T00:00:00Z",
    "id": "00000000-0000-0000-0000-000000000000",
    "updated_at": "2020-01-01T00:00:00Z",
}


@pytest.mark.parametrize("field", sorted(MASS_ASSIGNMENT))
def test_mass_assignment_is_rejected_and_changes_nothing(
    world: World, auth: dict[str, str], field: str
) -> None:
    before = world.state()
    extra = {field: MASS_ASSIGNMENT[field]}
    created = world.client.post("/v1/consents", json=consent_body(**extra), headers=auth)
    amended = world.client.patch(
        f"/v1/consents/{world.consent}",
        json={"purposes": ["referral"], **extra},
        headers={**auth, "If-Match": '"1"'},
    )
    revoked = world.client.post(
        f"/v1/consents/{world.consent}/revoke", json={"reason": None, **extra}, headers=auth
    )
    for response in (created, amended, revoked):
        assert response.status_code == 422
        assert any(error["field"] == field for error in response.get_json()["errors"])
    assert world.state() == before


def test_rotation_keeps_two_live_keys_then_the_old_one_stops(
    client: FlaskClient, database: Database, settings: Any
) -> None:
    now = utcnow()
    with database.transaction() as session:
        api_client, old = create_client(
            session, organization="practice-a", scopes=["consents:read"], name="t", now=now
        )
    with database.transaction() as session:
        new = rotate_key(session, client_id=api_client.id, now=now, grace=timedelta(hours=1))
    for key in (old, new.api_key):
        assert (
            client.get("/v1/consents", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
    with database.transaction() as session, pytest.raises(Exception, match="two live keys"):
        rotate_key(session, client_id=api_client.id, now=now, grace=timedelta(hours=1))
    # The grace period is cut short in the database: like a revocation, the
    # old key stops within the key cache time (a grace period that simply
    # runs out stops it to the instant: tests/security/test_key_cache.py).
    with database.transaction() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.prefix == old.split("_")[1])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    bound = time.monotonic() + settings.api_key_cache_ms / 1000
    while True:
        started = time.monotonic()
        status = client.get("/v1/consents", headers={"Authorization": f"Bearer {old}"}).status_code
        if status != 200:
            break
        assert started < bound
    assert status == 401
    new_headers = {"Authorization": f"Bearer {new.api_key}"}
    assert client.get("/v1/consents", headers=new_headers).status_code == 200


def test_a_revoked_key_stops_on_the_very_next_request_without_the_key_cache(
    settings: Any, database: Database, auth: dict[str, str]
) -> None:
    from consent_service import create_app

    uncached = type(settings)(**{**settings.__dict__, "api_key_cache_ms": 0})
    client = create_app(uncached, database=database).test_client()
    assert client.get("/v1/consents", headers=auth).status_code == 200
    prefix = auth["Authorization"].split("_")[1]
    from consent_service.services.clients import revoke_key

    with database.transaction() as session:
        revoke_key(session, prefix=prefix, now=utcnow())
    assert client.get("/v1/consents", headers=auth).status_code == 401


def test_keys_are_stored_as_a_keyed_hash(
    database: Database, auth: dict[str, str], settings: Any
) -> None:
    import hashlib

    from consent_service import create_app

    secret = auth["Authorization"].split("_", 2)[2]
    with database.reading() as session:
        stored = session.scalars(select(ApiKey.key_hash)).all()
    assert all(secret not in value for value in stored)
    assert all(hashlib.sha256(secret.encode()).hexdigest() not in value for value in stored)
    # Without the server's pepper, a copy of the database authenticates nobody.
    other = create_app(
        type(settings)(**{**settings.__dict__, "api_key_peppers": ("x" * 40,)}), database=database
    )
    assert other.test_client().get("/v1/consents", headers=auth).status_code == 401


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())
