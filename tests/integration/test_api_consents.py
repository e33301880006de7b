"""Contract of the consent endpoints: record, read, list, amend, revoke, versions.

Each test runs on SQLite and on PostgreSQL through the ``database`` fixture.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient

from consent_service.db.session import Database
from tests.conftest import KeyFactory, consent_body
from tests.integration.api_support import (
    EMPTY,
    amend,
    assert_problem,
    create_consent,
    parse_instant,
    revoke,
    row_counts,
)

CONSENT_FIELDS = {
    "id",
    "organization",
    "patient_id",
    "practitioner_id",
    "categories",
    "purposes",
    "decision",
    "valid_from",
    "valid_until",
    "collection",
    "status",
    "version",
    "created_at",
    "updated_at",
    "change",
    "actor",
    "reason",
    "recorded_at",
}


def test_create_answers_version_one_with_location_and_etag(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    body = consent_body(
        valid_from="2026-01-01T10:00:00+01:00",
        valid_until="2027-01-01T00:00:00Z",
        reason="signed at the desk",
    )
    response = client.post("/v1/consents", json=body, headers=auth)

    assert response.status_code == 201
    created = response.get_json()
    assert set(created) == CONSENT_FIELDS
    assert uuid.UUID(created["id"]).version == 4
    assert response.headers["Location"] == f"/v1/consents/{created['id']}"
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Cache-Control"] == "no-store"
    assert created["version"] == 1
    assert created["status"] == "active"
    assert created["change"] == "granted"
    assert created["organization"] == "practice-a"
    assert created["actor"].startswith("client:")
    assert created["reason"] == "signed at the desk"
    assert created["patient_id"] == body["patient_id"]
    assert created["categories"] == ["dental-chart", "radiographs"]
    assert created["collection"] == body["collection"]
    # Offsets are normalised to UTC, microseconds and Z.
    assert created["valid_from"] == "2026-01-01T09:00:00.000000Z"
    assert created["valid_until"] == "2027-01-01T00:00:00.000000Z"
    assert created["created_at"] == created["updated_at"] == created["recorded_at"]
    assert row_counts(database) == {
        **EMPTY,
        "consents": 1,
        "consent_versions": 1,
        "outbox_events": 1,
    }

    fetched = client.get(response.headers["Location"], headers=auth)
    assert fetched.get_json() == created


def test_create_defaults_valid_from_to_now_and_dedupes_lists(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = create_consent(
        client, auth, categories=["billing", "identity", "billing"], purposes=["referral"]
    )
    assert created["valid_from"] == created["recorded_at"]
    assert created["valid_until"] is None
    assert created["categories"] == ["billing", "identity"]
    assert created["reason"] is None


def test_get_answers_current_version_and_etag(client: FlaskClient, auth: dict[str, str]) -> None:
    created = create_consent(client, auth)
    amended = amend(client, auth, created, decision="deny")

    response = client.get(f"/v1/consents/{created['id']}", headers=auth)

    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    assert response.get_json() == amended
    assert response.get_json()["decision"] == "deny"


def test_unknown_consent_is_404_problem(client: FlaskClient, auth: dict[str, str]) -> None:
    missing = uuid.uuid4()
    for path in (
        f"/v1/consents/{missing}",
        f"/v1/consents/{missing}/versions",
        f"/v1/consents/{missing}/versions/1",
    ):
        assert_problem(client.get(path, headers=auth), 404)
    assert_problem(
        client.patch(
            f"/v1/consents/{missing}",
            json={"decision": "deny"},
            headers={**auth, "If-Match": '"1"'},
        ),
        404,
    )
    assert_problem(client.post(f"/v1/consents/{missing}/revoke", json={}, headers=auth), 404)


def test_another_organizations_consent_is_404_everywhere(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, database: Database
) -> None:
    theirs = create_consent(client, auth)
    other = api_key(org="practice-b")
    before = row_counts(database)
    cid = theirs["id"]

    for path in (
        f"/v1/consents/{cid}",
        f"/v1/consents/{cid}/versions",
        f"/v1/consents/{cid}/versions/1",
    ):
        body = assert_problem(client.get(path, headers=other), 404)
        assert cid not in str(body)
    assert_problem(
        client.patch(
            f"/v1/consents/{cid}", json={"decision": "deny"}, headers={**other, "If-Match": '"1"'}
        ),
        404,
    )
    assert_problem(client.post(f"/v1/consents/{cid}/revoke", json={}, headers=other), 404)
    assert client.get("/v1/consents", headers=other).get_json() == {
        "items": [],
        "next_cursor": None,
    }
    export = client.get(f"/v1/patients/{theirs['patient_id']}/export", headers=other).get_json()
    assert export["consents"] == []
    assert row_counts(database) == before
    assert client.get(f"/v1/consents/{cid}", headers=auth).get_json()["version"] == 1


def test_amend_needs_if_match_and_current_version(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}"

    assert_problem(client.patch(path, json={"decision": "deny"}, headers=auth), 428)
    assert_problem(
        client.patch(path, json={"decision": "deny"}, headers={**auth, "If-Match": "1"}), 428
    )
    stale = client.patch(path, json={"decision": "deny"}, headers={**auth, "If-Match": '"2"'})
    assert_problem(stale, 412)
    assert stale.headers["ETag"] == '"1"'
    for odd in ('"0"', '"-1"', '"99999999999"', '"\u00b2"', '"' + "9" * 5000 + '"', '"a"'):
        assert_problem(
            client.patch(path, json={"decision": "deny"}, headers={**auth, "If-Match": odd}), 412
        )
    assert row_counts(database)["consent_versions"] == 1

    response = client.patch(
        path,
        json={"decision": "deny", "purposes": ["referral", "emergency"], "reason": "changed mind"},
        headers={**auth, "If-Match": '"1"'},
    )
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    amended = response.get_json()
    assert amended["version"] == 2
    assert amended["change"] == "amended"
    assert amended["decision"] == "deny"
    assert amended["purposes"] == ["referral", "emergency"]
    assert amended["reason"] == "changed mind"
    # Untouched fields carry over; created_at stays, updated_at moves.
    for name in (
        "patient_id",
        "practitioner_id",
        "categories",
        "valid_from",
        "collection",
        "created_at",
    ):
        assert amended[name] == created[name]
    assert parse_instant(amended["updated_at"]) >= parse_instant(created["updated_at"])
    assert amended["updated_at"] == amended["recorded_at"]

    # The old ETag is now stale.
    assert_problem(
        client.patch(path, json={"decision": "permit"}, headers={**auth, "If-Match": '"1"'}), 412
    )
    weak = client.patch(path, json={"decision": "permit"}, headers={**auth, "If-Match": 'W/"2"'})
    assert weak.status_code == 200 and weak.get_json()["version"] == 3


def test_amend_validity_and_collection(client: FlaskClient, auth: dict[str, str]) -> None:
    created = create_consent(client, auth, valid_from="2026-01-01T00:00:00Z")
    amended = amend(
        client,
        auth,
        created,
        valid_until="2026-06-01T00:00:00Z",
        collection={"method": "email", "evidence_ref": "mail-7"},
    )
    assert amended["valid_until"] == "2026-06-01T00:00:00.000000Z"
    assert amended["collection"] == {
        "method": "email",
        "evidence_ref": "mail-7",
        "policy_version": None,
    }
    cleared = amend(client, auth, amended, valid_until=None)
    assert cleared["valid_until"] is None

    bad = client.patch(
        f"/v1/consents/{created['id']}",
        json={"valid_until": "2025-01-01T00:00:00Z"},
        headers={**auth, "If-Match": '"3"'},
    )
    assert_problem(bad, 422, "valid_until")
    assert client.get(f"/v1/consents/{created['id']}", headers=auth).get_json()["version"] == 3


def test_amend_rejects_empty_and_unknown_fields(client: FlaskClient, auth: dict[str, str]) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}"
    headers = {**auth, "If-Match": '"1"'}
    assert_problem(client.patch(path, json={}, headers=headers), 422, "_schema")
    assert_problem(client.patch(path, json={"reason": "only a reason"}, headers=headers), 422)
    for field, value in (("status", "revoked"), ("version", 5), ("patient_id", "p2"), ("id", "x")):
        assert_problem(client.patch(path, json={field: value}, headers=headers), 422, field)
    assert client.get(path, headers=auth).get_json()["version"] == 1


def test_revoke_answers_next_version_then_409(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}/revoke"

    response = client.post(path, json={"reason": "patient asked"}, headers=auth)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    revoked = response.get_json()
    assert revoked["status"] == "revoked"
    assert revoked["change"] == "revoked"
    assert revoked["version"] == 2
    assert revoked["reason"] == "patient asked"
    assert revoked["decision"] == created["decision"]

    assert_problem(client.post(path, json={}, headers=auth), 409)
    amend_after = client.patch(
        f"/v1/consents/{created['id']}",
        json={"decision": "deny"},
        headers={**auth, "If-Match": '"2"'},
    )
    assert_problem(amend_after, 409)
    assert row_counts(database)["consent_versions"] == 2


def test_revoke_honours_optional_if_match(client: FlaskClient, auth: dict[str, str]) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}/revoke"
    assert_problem(client.post(path, json={}, headers={**auth, "If-Match": '"7"'}), 412)
    malformed = assert_problem(
        client.post(path, json={}, headers={**auth, "If-Match": "seven"}), 400
    )
    assert malformed["title"] == "Bad Request"
    response = client.post(path, json={}, headers={**auth, "If-Match": '"1"'})
    assert response.status_code == 200
    assert response.get_json()["reason"] is None


def test_version_history_is_contiguous_and_immutable(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = create_consent(client, auth, reason="first")
    path = f"/v1/consents/{created['id']}/versions"
    snapshots = [client.get(path, headers=auth).get_json()]
    second = amend(client, auth, created, categories=["billing"], reason="second")
    snapshots.append(client.get(path, headers=auth).get_json())
    third = amend(client, auth, second, decision="deny")
    snapshots.append(client.get(path, headers=auth).get_json())
    fourth = revoke(client, auth, created["id"], reason="gone")
    final = client.get(path, headers=auth).get_json()

    assert [v["version"] for v in final] == [1, 2, 3, 4]
    assert [v["change"] for v in final] == ["granted", "amended", "amended", "revoked"]
    assert final == [created, second, third, fourth]
    # Earlier reads of the history are prefixes of later ones: nothing was rewritten.
    for earlier in snapshots:
        assert final[: len(earlier)] == earlier
    assert final[0]["categories"] == ["dental-chart", "radiographs"]
    assert final[1]["categories"] == ["billing"]
    assert [v["status"] for v in final] == ["active", "active", "active", "revoked"]
    recorded = [parse_instant(v["recorded_at"]) for v in final]
    assert recorded == sorted(recorded)
    assert len({v["created_at"] for v in final}) == 1

    for version in final:
        one = client.get(f"{path}/{version['version']}", headers=auth)
        assert one.status_code == 200
        assert one.headers["ETag"] == f'"{version["version"]}"'
        assert one.get_json() == version
    for missing in (0, 5, 2**31, 10**30):
        assert_problem(client.get(f"{path}/{missing}", headers=auth), 404)


def _walk(client: FlaskClient, auth: dict[str, str], query: str) -> list[list[dict[str, Any]]]:
    pages = []
    cursor = None
    while True:
        url = f"/v1/consents?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=auth)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


@pytest.mark.parametrize("limit", [1, 3, 7, 200])
def test_list_walks_every_consent_once_in_order(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, limit: int
) -> None:
    made = [create_consent(client, auth, patient_id=f"pat-{i % 3}") for i in range(14)]
    create_consent(client, api_key(org="practice-b"))
    pages = _walk(client, auth, f"limit={limit}")

    assert all(len(page) <= limit for page in pages)
    assert all(len(page) == limit for page in pages[:-1])
    ids = [item["id"] for page in pages for item in page]
    assert ids == [consent["id"] for consent in made]
    assert len(pages) == max(1, -(-len(made) // limit))


def test_list_filters_and_shows_current_versions(client: FlaskClient, auth: dict[str, str]) -> None:
    a1 = create_consent(client, auth, patient_id="pat-a", practitioner_id="rpps:1")
    a2 = create_consent(client, auth, patient_id="pat-a", practitioner_id="rpps:2")
    b1 = create_consent(client, auth, patient_id="pat-b", practitioner_id="rpps:1")
    revoked = revoke(client, auth, a2["id"])

    def ids(query: str) -> list[str]:
        return [item["id"] for page in _walk(client, auth, query) for item in page]

    assert ids("patient_id=pat-a&limit=1") == [a1["id"], a2["id"]]
    assert ids("practitioner_id=rpps:1") == [a1["id"], b1["id"]]
    assert ids("status=revoked") == [a2["id"]]
    assert ids("status=active&limit=1") == [a1["id"], b1["id"]]
    assert ids("status=expired") == []
    assert ids("patient_id=pat-a&practitioner_id=rpps:2&status=active") == []
    listed = client.get("/v1/consents?status=revoked", headers=auth).get_json()["items"]
    assert listed == [revoked]


def test_list_defaults_to_fifty(client: FlaskClient, auth: dict[str, str]) -> None:
    for _ in range(51):
        create_consent(client, auth)
    first = client.get("/v1/consents", headers=auth).get_json()
    assert len(first["items"]) == 50 and first["next_cursor"]
    rest = client.get(f"/v1/consents?cursor={first['next_cursor']}", headers=auth).get_json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", "9" * 5000])
def test_list_limit_bounds(client: FlaskClient, auth: dict[str, str], limit: str) -> None:
    assert_problem(
        client.get(f"/v1/consents?limit={limit}", headers=auth), 422, "limit", location="query"
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "W10",  # base64 of []
        "eyJhIjogMX0",  # base64 of {"a": 1}
        "WyIyMDI2LTAxLTAxIiwgIm5vdC1hLXV1aWQiXQ",  # ["2026-01-01", "not-a-uuid"]
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgIjEyMyJd",  # naive instant
        "%00",
        "x" * 201,
        "////",
    ],
)
def test_forged_cursor_is_422(client: FlaskClient, auth: dict[str, str], cursor: str) -> None:
    assert_problem(client.get(f"/v1/consents?cursor={cursor}", headers=auth), 422, "cursor")


def test_truncated_cursor_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    for _ in range(3):
        create_consent(client, auth)
    cursor = client.get("/v1/consents?limit=1", headers=auth).get_json()["next_cursor"]
    assert cursor
    tampered = cursor[:-4]  # cut inside the JSON it encodes
    assert_problem(
        client.get(f"/v1/consents?cursor={tampered}&limit=1", headers=auth), 422, "cursor"
    )


def test_list_query_rejects_bad_filters(client: FlaskClient, auth: dict[str, str]) -> None:
    body = assert_problem(
        client.get("/v1/consents?status=pending&patient_id=Jean%20Dupont", headers=auth),
        422,
        "status",
        "patient_id",
        location="query",
    )
    assert len(body["errors"]) == 2
