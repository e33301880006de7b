"""POST /v1/practitioners/{id}/revoke-all and GET /v1/patients/{id}/export."""

from __future__ import annotations

import json

from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from tests.conftest import KeyFactory
from tests.integration.api_support import (
    amend,
    assert_problem,
    create_consent,
    parse_instant,
    revoke,
    row_counts,
)

LEAVER = "rpps:10009999999"


def _events_by_consent(database: Database) -> dict[str, list[dict[str, object]]]:
    with database.reading() as session:
        rows = session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()
    found: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        found.setdefault(row.consent_id, []).append(
            {"type": row.type, "version": row.consent_version, "data": json.loads(row.payload)}
        )
    return found


def test_revoke_all_revokes_only_this_organizations_active_consents_of_the_practitioner(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, database: Database
) -> None:
    active = [create_consent(client, auth, practitioner_id=LEAVER) for _ in range(3)]
    active[1] = amend(client, auth, active[1], decision="deny")
    already = create_consent(client, auth, practitioner_id=LEAVER)
    revoke(client, auth, already["id"])
    stays = create_consent(client, auth, practitioner_id="rpps:10001111111")
    other_org = api_key(org="practice-b")
    theirs = create_consent(client, other_org, practitioner_id=LEAVER)
    before = row_counts(database)

    response = client.post(
        f"/v1/practitioners/{LEAVER}/revoke-all", json={"reason": "left the practice"}, headers=auth
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["practitioner_id"] == LEAVER
    revoked = body["revoked"]
    assert [c["id"] for c in revoked] == [c["id"] for c in active]
    for consent, before_version in zip(revoked, active, strict=True):
        assert consent["status"] == "revoked"
        assert consent["change"] == "revoked"
        assert consent["reason"] == "left the practice"
        assert consent["version"] == before_version["version"] + 1
        assert consent["decision"] == before_version["decision"]
    # One version and one event each, nothing else.
    after = row_counts(database)
    assert after["consent_versions"] == before["consent_versions"] + 3
    assert after["outbox_events"] == before["outbox_events"] + 3
    events = _events_by_consent(database)
    for consent in revoked:
        last = events[consent["id"]][-1]
        assert last["type"] == "consent.revoked"
        assert last["data"] == consent
    assert len(events[already["id"]]) == 2
    assert client.get(f"/v1/consents/{stays['id']}", headers=auth).get_json()["status"] == "active"
    assert client.get(f"/v1/consents/{theirs['id']}", headers=other_org).get_json() == theirs

    again = client.post(f"/v1/practitioners/{LEAVER}/revoke-all", json={}, headers=auth)
    assert again.status_code == 200
    assert again.get_json() == {"practitioner_id": LEAVER, "revoked": []}
    assert row_counts(database) == after


def test_revoke_all_for_unknown_practitioner_is_empty(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.post("/v1/practitioners/rpps:404/revoke-all", json={}, headers=auth)
    assert response.status_code == 200
    assert response.get_json() == {"practitioner_id": "rpps:404", "revoked": []}


def test_revoke_all_validates_reason(client: FlaskClient, auth: dict[str, str]) -> None:
    create_consent(client, auth, practitioner_id=LEAVER)
    response = client.post(
        f"/v1/practitioners/{LEAVER}/revoke-all", json={"reason": "x" * 501}, headers=auth
    )
    assert_problem(response, 422, "reason")
    listed = client.get(f"/v1/consents?practitioner_id={LEAVER}", headers=auth).get_json()
    assert [c["status"] for c in listed["items"]] == ["active"]


def test_export_holds_every_version_of_every_consent_of_the_patient(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory
) -> None:
    first = create_consent(client, auth, patient_id="pat-export")
    second = amend(client, auth, first, categories=["billing"])
    third = revoke(client, auth, first["id"])
    other = create_consent(client, auth, patient_id="pat-export", practitioner_id="rpps:2")
    create_consent(client, auth, patient_id="pat-someone-else")
    create_consent(client, api_key(org="practice-b"), patient_id="pat-export")

    response = client.get("/v1/patients/pat-export/export", headers=auth)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"patient_id", "organization", "exported_at", "consents"}
    assert body["patient_id"] == "pat-export"
    assert body["organization"] == "practice-a"
    assert parse_instant(body["exported_at"]) >= parse_instant(other["recorded_at"])
    assert body["consents"] == [
        {"id": first["id"], "current": third, "versions": [first, second, third]},
        {"id": other["id"], "current": other, "versions": [other]},
    ]
    for consent in body["consents"]:
        history = client.get(f"/v1/consents/{consent['id']}/versions", headers=auth).get_json()
        assert consent["versions"] == history


def test_export_of_unknown_patient_is_empty(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get("/v1/patients/pat-nobody/export", headers=auth).get_json()
    assert body["consents"] == [] and body["patient_id"] == "pat-nobody"
