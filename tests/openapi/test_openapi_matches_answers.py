"""The OpenAPI document against the API's real answers, in both directions.

Every operation is called through the test client the ways a partner can
get it wrong (no key, a key without the scope, a malformed, oversized or
non-JSON body, unknown fields, stale or missing If-Match, a replayed or
reused Idempotency-Key, a consent that is no longer active, an unknown id,
an exhausted budget, a database that is down) and the right way, with a key
holding nothing but the scope the document names. Each answer must be
declared: its status, its content type, its body against the declared schema,
and each header a client acts on (declared when sent; sent when declared
required; matching its declared pattern). Then each status declared for an
operation must have been seen: the document promises nothing the API does
not do, except the few written down in ``NOT_PROVOKED`` with the reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from werkzeug.test import TestResponse

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.session import Database
from consent_service.services.clients import SCOPES
from tests.conftest import TEST_SECRET_KEYS, KeyFactory, consent_body
from tests.openapi.test_openapi_lint import METHODS, resolve

# Headers a client acts on; each must be declared wherever the API sends it.
TRACKED_HEADERS = (
    "ETag",
    "Location",
    "Retry-After",
    "WWW-Authenticate",
    "Idempotent-Replayed",
    "X-Request-Id",
)
# Declared, not provoked here, and why.
NOT_PROVOKED = {
    ("revokePractitioner", "412"): "another write between the read and the update of a consent",
}
PRACTITIONER = "rpps:10003456789"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
ALL_LIMITS_ONE = ",".join(
    f"{group}=1/minute" for group in ("reads", "writes", "decisions", "events", "admin")
)


class Recorder:
    """Calls the API, checks each answer against the document, remembers the statuses."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.routes = [
            (self._template(path), method, operation)
            for path, item in document["paths"].items()
            for method, operation in item.items()
            if method in METHODS
        ]

    @staticmethod
    def _template(path: str) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", path)
        return re.compile(
            "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$"
        )

    def operation(self, method: str, url: str) -> dict[str, Any]:
        path = url.partition("?")[0]
        for template, documented_method, operation in self.routes:
            if documented_method == method.lower() and template.match(path):
                return operation
        raise AssertionError(f"{method} {path} is not in the document")

    def call(self, client: FlaskClient, method: str, url: str, **kwargs: Any) -> TestResponse:
        operation = self.operation(method, url)
        response = client.open(url, method=method, **kwargs)
        self._check(operation, response)
        self.seen[operation["operationId"]].add(str(response.status_code))
        return response

    def _check(self, operation: dict[str, Any], response: TestResponse) -> None:
        where = f"{operation['operationId']} answered {response.status_code}"
        status = str(response.status_code)
        assert status in operation["responses"], f"{where}: not declared"
        declared = resolve(self.document, operation["responses"][status])
        content = declared.get("content", {})
        assert response.mimetype in content, (where, response.mimetype, list(content))
        schema = {**content[response.mimetype]["schema"], "components": self.document["components"]}
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(response.get_json())]
        assert not errors, (where, errors[:3], response.get_json())
        headers = {
            name: resolve(self.document, h) for name, h in declared.get("headers", {}).items()
        }
        for name in TRACKED_HEADERS:
            if name in response.headers:
                assert name in headers, f"{where}: sends {name}, not declared"
        for name, header in headers.items():
            value = response.headers.get(name)
            if header.get("required"):
                assert value is not None, f"{where}: {name} declared required, not sent"
            pattern = header["schema"].get("pattern")
            if value is not None and pattern:
                assert re.search(pattern, value), (where, name, value, pattern)


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    loaded: dict[str, Any] = client.get("/openapi.json").get_json()
    return loaded


@pytest.fixture
def recorder(document: dict[str, Any]) -> Recorder:
    return Recorder(document)


def _scoped_keys(api_key: KeyFactory, document: dict[str, Any]) -> dict[str, dict[str, str]]:
    """For each scope the document names, a key holding that scope alone."""
    scopes = {
        operation["x-scope"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    }
    return {scope: api_key(scopes=(scope,)) for scope in scopes}


def _key_for(keys: dict[str, dict[str, str]], operation: dict[str, Any]) -> dict[str, str]:
    return keys[operation["x-scope"]]


def _generic_calls(ids: dict[str, str]) -> list[tuple[str, str, Any]]:
    """One plausible request per operation: (method, url, JSON body or None)."""
    consent, request_id = ids["consent"], ids["request"]
    return [
        ("POST", "/v1/consents", consent_body()),
        ("GET", "/v1/consents", None),
        ("GET", f"/v1/consents/{consent}", None),
        ("PATCH", f"/v1/consents/{consent}", {"purposes": ["care-coordination"]}),
        ("POST", f"/v1/consents/{consent}/revoke", {"reason": "withdrawn"}),
        ("GET", f"/v1/consents/{consent}/versions", None),
        ("GET", f"/v1/consents/{consent}/versions/1", None),
        ("POST", f"/v1/practitioners/{PRACTITIONER}/revoke-all", {"reason": "left"}),
        ("GET", f"/v1/patients/{ids['patient']}/export", None),
        ("POST", "/v1/decisions", _question(ids["patient"])),
        ("POST", "/v1/decisions:batch", {"checks": [_question(ids["patient"])]}),
        ("GET", "/v1/events", None),
        ("GET", "/v1/audit", None),
        ("POST", "/v1/consent-requests", _consent_request(ids["patient"])),
        ("GET", f"/v1/consent-requests/{request_id}", None),
        ("POST", "/v1/subscribers/acks", {"acks": [_ack(consent)]}),
        ("GET", f"/v1/consents/{consent}/enforcement", None),
        ("GET", "/v1/subscribers", None),
        ("POST", "/v1/emergency-access", _emergency(ids["patient"])),
        ("POST", f"/v1/emergency-access/{ids['emergency']}/end", None),
        ("GET", f"/v1/emergency-access?patient_id={ids['patient']}", None),
    ]


def _emergency(patient: str) -> dict[str, Any]:
    return {
        "patient_id": patient,
        "practitioner_id": PRACTITIONER,
        "justification": "Unconscious patient admitted to the emergency room.",
        "duration_minutes": 30,
    }


def _ack(consent: str) -> dict[str, Any]:
    return {
        "event_id": "00000000-0000-4000-8000-000000000001",
        "consent_id": consent,
        "version": 1,
        "applied_at": "2026-01-01T00:00:00Z",
    }


def _question(patient: str) -> dict[str, Any]:
    return {
        "patient_id": patient,
        "practitioner_id": PRACTITIONER,
        "category": "radiographs",
        "purpose": "care-coordination",
    }


def _consent_request(patient: str) -> dict[str, Any]:
    return {
        "patient_id": patient,
        "practitioner_id": PRACTITIONER,
        "practitioner_name": "Dr Martin",
        "categories": ["radiographs"],
        "purposes": ["care-coordination"],
    }


def _setup(client: FlaskClient, auth: dict[str, str]) -> dict[str, str]:
    body = consent_body()
    consent = client.post("/v1/consents", json=body, headers=auth).get_json()["id"]
    created = client.post(
        "/v1/consent-requests", json=_consent_request(str(body["patient_id"])), headers=auth
    )
    opened = client.post(
        "/v1/emergency-access", json=_emergency(str(body["patient_id"])), headers=auth
    )
    return {
        "consent": consent,
        "patient": str(body["patient_id"]),
        "request": created.get_json()["id"],
        "emergency": opened.get_json()["id"],
    }


def test_every_answer_is_declared_and_every_declared_status_answers(
    app: Flask,
    client: FlaskClient,
    api_key: KeyFactory,
    auth: dict[str, str],
    document: dict[str, Any],
    recorder: Recorder,
    database: Database,
) -> None:
    keys = _scoped_keys(api_key, document)
    ids = _setup(client, auth)
    generic = _generic_calls(ids)
    assert len(generic) == len(recorder.routes), "a new operation needs a request here"
    oversized = b"[" + b" " * app.config["MAX_CONTENT_LENGTH"] + b"]"

    for method, url, body in generic:
        operation = recorder.operation(method, url)
        scope = operation["x-scope"]
        recorder.call(client, method, url, json=body)  # no key
        others = api_key(scopes=tuple(s for s in SCOPES if s != scope))
        assert recorder.call(client, method, url, json=body, headers=others).status_code == 403
        key = _key_for(keys, operation)
        if method in ("POST", "PATCH"):
            for data, content_type in (
                (b"{", "application/json"),
                (oversized, "application/json"),
                (b"x", "text/plain"),
                (b'{"unexpected": 1}', "application/json"),
            ):
                recorder.call(
                    client, method, url, data=data, content_type=content_type, headers=key
                )
        elif "?" not in url:
            recorder.call(client, method, f"{url}?unexpected=1", headers=key)

    _the_right_way(client, recorder, keys, ids)
    _conditional_and_idempotent_writes(client, recorder, keys, ids)
    _unknown_ids(client, recorder, keys)
    _exhausted_budgets(recorder, api_key, database, generic)
    _database_down(recorder, generic)

    missing = {
        operation["operationId"]: sorted(
            status
            for status in operation["responses"]
            if status != "default"
            and status not in recorder.seen[operation["operationId"]]
            and (operation["operationId"], status) not in NOT_PROVOKED
        )
        for _, _, operation in recorder.routes
    }
    assert not any(missing.values()), f"declared but never answered: {missing}"


def _the_right_way(
    client: FlaskClient, recorder: Recorder, keys: dict[str, dict[str, str]], ids: dict[str, str]
) -> None:
    """Each operation succeeds with a key holding only the scope the document names."""
    write, read = keys["consents:write"], keys["consents:read"]
    created = recorder.call(client, "POST", "/v1/consents", json=consent_body(), headers=write)
    assert created.status_code == 201
    consent = created.get_json()["id"]
    assert created.headers["Location"] == f"/v1/consents/{consent}"
    for url in (
        "/v1/consents",
        f"/v1/consents/{consent}",
        f"/v1/consents/{consent}/versions",
        f"/v1/consents/{consent}/versions/1",
        f"/v1/patients/{ids['patient']}/export",
        f"/v1/consent-requests/{ids['request']}",
    ):
        assert recorder.call(client, "GET", url, headers=read).status_code == 200, url
    amended = recorder.call(
        client,
        "PATCH",
        f"/v1/consents/{consent}",
        json={"purposes": ["care-coordination"]},
        headers={**write, "If-Match": created.headers["ETag"]},
    )
    assert amended.status_code == 200
    revoked = recorder.call(
        client,
        "POST",
        f"/v1/consents/{consent}/revoke",
        json={"reason": "withdrawn"},
        headers={**write, "If-Match": amended.headers["ETag"]},
    )
    assert revoked.status_code == 200
    for method, url, body, key in (
        ("POST", f"/v1/practitioners/{PRACTITIONER}/revoke-all", {"reason": "left"}, write),
        ("POST", "/v1/decisions", _question(ids["patient"]), keys["decisions:read"]),
        ("POST", "/v1/decisions:batch", {"checks": [_question("p-2")]}, keys["decisions:read"]),
        ("GET", "/v1/events", None, keys["events:read"]),
        ("GET", "/v1/audit", None, keys["admin"]),
        ("GET", f"/v1/consents/{consent}/enforcement", None, read),
        ("GET", "/v1/subscribers", None, read),
    ):
        assert recorder.call(client, method, url, json=body, headers=key).status_code == 200
    acks = {"acks": [_ack(consent)]}
    acked = recorder.call(
        client, "POST", "/v1/subscribers/acks", json=acks, headers=keys["events:ack"]
    )
    assert acked.status_code == 202
    asked = recorder.call(
        client, "POST", "/v1/consent-requests", json=_consent_request("p-3"), headers=write
    )
    assert asked.status_code == 201
    assert asked.headers["Location"] == f"/v1/consent-requests/{asked.get_json()['id']}"
    invalid = recorder.call(client, "GET", "/v1/patients/-bad/export", headers=read)
    assert invalid.status_code == 422
    emergency = keys["emergency:write"]
    opened = recorder.call(
        client, "POST", "/v1/emergency-access", json=_emergency("p-4"), headers=emergency
    )
    assert opened.status_code == 201
    end = f"/v1/emergency-access/{opened.get_json()['id']}/end"
    assert recorder.call(client, "POST", end, headers=emergency).status_code == 200
    assert recorder.call(client, "POST", end, headers=emergency).status_code == 409
    listed = recorder.call(client, "GET", "/v1/emergency-access?patient_id=p-4", headers=read)
    assert listed.status_code == 200
    unnamed = recorder.call(client, "GET", "/v1/emergency-access", headers=read)
    assert unnamed.status_code == 422


def _conditional_and_idempotent_writes(
    client: FlaskClient, recorder: Recorder, keys: dict[str, dict[str, str]], ids: dict[str, str]
) -> None:
    write = keys["consents:write"]
    body = consent_body()
    replay = {**write, "Idempotency-Key": "create-once-1"}
    first = recorder.call(client, "POST", "/v1/consents", json=body, headers=replay)
    again = recorder.call(client, "POST", "/v1/consents", json=body, headers=replay)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    reused = recorder.call(client, "POST", "/v1/consents", json=consent_body(), headers=replay)
    assert reused.status_code == 422
    consent = first.get_json()["id"]
    url = f"/v1/consents/{consent}"
    amend = {"purposes": ["care-coordination"]}
    assert recorder.call(client, "PATCH", url, json=amend, headers=write).status_code == 428
    stale = recorder.call(client, "PATCH", url, json=amend, headers={**write, "If-Match": '"9"'})
    assert stale.status_code == 412
    assert stale.headers["ETag"] == '"1"'
    revoke = f"{url}/revoke"
    for if_match, status in (('"9"', 412), ("nine", 400), ('"1"', 200), ('"2"', 409)):
        answer = recorder.call(
            client, "POST", revoke, json={}, headers={**write, "If-Match": if_match}
        )
        assert answer.status_code == status, (if_match, answer.get_json())
    again = recorder.call(client, "PATCH", url, json=amend, headers={**write, "If-Match": '"2"'})
    assert again.status_code == 409
    bad_key = {**write, "Idempotency-Key": "two words"}
    assert recorder.call(client, "POST", revoke, json={}, headers=bad_key).status_code == 400


def _unknown_ids(client: FlaskClient, recorder: Recorder, keys: dict[str, dict[str, str]]) -> None:
    read, write = keys["consents:read"], keys["consents:write"]
    for method, url, key, extra in (
        ("GET", f"/v1/consents/{UNKNOWN_ID}", read, {}),
        ("GET", f"/v1/consents/{UNKNOWN_ID}/versions", read, {}),
        ("GET", f"/v1/consents/{UNKNOWN_ID}/versions/1", read, {}),
        ("GET", f"/v1/consent-requests/{UNKNOWN_ID}", read, {}),
        ("PATCH", f"/v1/consents/{UNKNOWN_ID}", write, {"If-Match": '"1"'}),
        ("POST", f"/v1/consents/{UNKNOWN_ID}/revoke", write, {}),
        ("GET", f"/v1/consents/{UNKNOWN_ID}/enforcement", read, {}),
        ("POST", f"/v1/emergency-access/{UNKNOWN_ID}/end", keys["emergency:write"], {}),
    ):
        body = {"purposes": ["care-coordination"]} if method == "PATCH" else None
        answer = recorder.call(client, method, url, json=body, headers={**key, **extra})
        assert answer.status_code == 404, (method, url)


def _exhausted_budgets(
    recorder: Recorder, api_key: KeyFactory, database: Database, generic: list[tuple[str, str, Any]]
) -> None:
    """With a budget of one request a minute, each operation's second call is a 429."""
    settings = Settings(
        database_url=database.url, secret_keys=TEST_SECRET_KEYS, rate_limits=ALL_LIMITS_ONE
    )
    client = create_app(settings, database=database).test_client()
    for method, url, body in generic:
        key = api_key()
        recorder.call(client, method, url, json=body, headers=key)
        assert recorder.call(client, method, url, json=body, headers=key).status_code == 429


def _database_down(recorder: Recorder, generic: list[tuple[str, str, Any]]) -> None:
    """An unreachable database: every operation answers 503 with Retry-After."""
    settings = Settings(
        database_url="sqlite:////nonexistent-directory/consent.db",
        secret_keys=TEST_SECRET_KEYS,
        rate_limits="off",
    )
    client = create_app(settings).test_client()
    for method, url, body in generic:
        answer = recorder.call(
            client, method, url, json=body, headers={"Authorization": "Bearer some-key"}
        )
        assert answer.status_code == 503
        assert answer.headers["Retry-After"].isdigit()
