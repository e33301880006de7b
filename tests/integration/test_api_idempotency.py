"""``Idempotency-Key`` on POSTs: a retry replays the stored answer, nothing is recorded twice."""

from __future__ import annotations

import json

from flask.testing import FlaskClient

from consent_service.db.session import Database
from tests.conftest import KeyFactory, consent_body
from tests.integration.api_support import assert_problem, create_consent, row_counts


def test_same_key_and_body_replays_the_first_answer(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    body = consent_body()
    headers = {**auth, "Idempotency-Key": "create-1"}
    first = client.post("/v1/consents", json=body, headers=headers)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    counts = row_counts(database)
    assert counts["consents"] == 1 and counts["idempotency_records"] == 1

    for _ in range(3):
        again = client.post("/v1/consents", json=body, headers=headers)
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.get_json() == first.get_json()
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["ETag"] == first.headers["ETag"]
    assert row_counts(database) == counts


def test_key_order_and_spacing_of_the_body_do_not_matter(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    body = consent_body()
    headers = {**auth, "Idempotency-Key": "create-2", "Content-Type": "application/json"}
    first = client.post("/v1/consents", data=json.dumps(body), headers=headers)
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    again = client.post("/v1/consents", data=reordered, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert row_counts(database)["consents"] == 1


def test_same_key_other_body_is_422(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    headers = {**auth, "Idempotency-Key": "create-3"}
    body = consent_body()
    first = client.post("/v1/consents", json=body, headers=headers)
    assert first.status_code == 201
    other = client.post("/v1/consents", json={**body, "decision": "deny"}, headers=headers)
    problem = assert_problem(other, 422)
    assert "Idempotency-Key" in problem["detail"]
    assert "Idempotent-Replayed" not in other.headers
    assert row_counts(database)["consents"] == 1
    # Same key on another route is another request too.
    path = f"/v1/consents/{first.get_json()['id']}/revoke"
    assert_problem(client.post(path, json=body, headers=headers), 422)


def test_keys_belong_to_one_client(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, database: Database
) -> None:
    body = consent_body()
    mine = client.post("/v1/consents", json=body, headers={**auth, "Idempotency-Key": "shared"})
    other_client = {**api_key(), "Idempotency-Key": "shared"}
    theirs = client.post("/v1/consents", json=body, headers=other_client)
    assert theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["id"] != mine.get_json()["id"]
    assert row_counts(database)["consents"] == 2


def test_revoke_replay_answers_200_not_409(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}/revoke"
    headers = {**auth, "Idempotency-Key": "revoke-1"}
    first = client.post(path, json={"reason": "asked"}, headers=headers)
    again = client.post(path, json={"reason": "asked"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert row_counts(database)["consent_versions"] == 2
    # Without the key the retry is a conflict, as the contract says.
    assert_problem(client.post(path, json={"reason": "asked"}, headers=auth), 409)


def test_failed_request_stores_no_answer(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}/revoke"
    headers = {**auth, "Idempotency-Key": "stale-then-ok"}
    assert_problem(client.post(path, json={}, headers={**headers, "If-Match": '"9"'}), 412)
    assert row_counts(database)["idempotency_records"] == 0
    assert client.post(path, json={}, headers=headers).status_code == 200


def test_revoke_all_replay(client: FlaskClient, auth: dict[str, str], database: Database) -> None:
    create_consent(client, auth, practitioner_id="rpps:7")
    headers = {**auth, "Idempotency-Key": "leave-7"}
    first = client.post("/v1/practitioners/rpps:7/revoke-all", json={}, headers=headers)
    again = client.post("/v1/practitioners/rpps:7/revoke-all", json={}, headers=headers)
    assert len(first.get_json()["revoked"]) == 1
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert row_counts(database)["consent_versions"] == 2
