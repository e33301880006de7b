"""Emergency access through the API: opening, decisions over a deny, end, expiry, events, audit."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from consent_events import ConsentView, Store
from consent_events.envelope import from_structured
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.audit import writer as audit_writer
from consent_service.db.audit_models import AuditEntry
from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.services.expiry import expire_due
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory
from tests.integration.api_support import (
    assert_problem,
    assert_valid_event_data,
    create_consent,
    parse_instant,
    wire,
)

PRACTITIONER = "rpps:10003456789"
WHY = "Unconscious patient admitted to the emergency room at night."


def _open(client: FlaskClient, headers: dict[str, str], patient: str, **extra: Any) -> Any:
    body = {"patient_id": patient, "practitioner_id": PRACTITIONER, "justification": WHY}
    return client.post("/v1/emergency-access", json={**body, **extra}, headers=headers)


def _decide(
    client: FlaskClient, headers: dict[str, str], patient_id: str, **extra: Any
) -> dict[str, Any]:
    question = {
        "patient_id": patient_id,
        "practitioner_id": PRACTITIONER,
        "category": "radiographs",
        "purpose": "care-coordination",
        **extra,
    }
    response = client.post("/v1/decisions", json=question, headers=headers)
    assert response.status_code == 200, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def _events(database: Database) -> list[tuple[str, dict[str, Any]]]:
    with database.reading() as session:
        rows = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.type == "consent.emergency-access")
            .order_by(OutboxEvent.id)
        ).all()
        return [(row.consent_id, json.loads(row.payload)) for row in rows]


def _audit(database: Database, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.objects)
            .where(AuditEntry.action.startswith(prefix))
            .order_by(AuditEntry.id)
        ).all()
    return [(action, json.loads(objects)) for action, objects in rows]


@pytest.fixture
def denied(client: FlaskClient, auth: dict[str, str]) -> dict[str, Any]:
    """A patient who refused this practitioner."""
    return create_consent(client, auth, practitioner_id=PRACTITIONER, decision="deny")


def test_an_open_access_permits_over_a_deny_until_it_ends(
    client: FlaskClient, auth: dict[str, str], denied: dict[str, Any], database: Database
) -> None:
    patient = denied["patient_id"]
    assert _decide(client, auth, patient)["decision"] == "deny"
    opened = _open(client, auth, patient, duration_minutes=30)
    assert opened.status_code == 201, opened.get_json()
    access = opened.get_json()
    assert set(access) == {"id", "expires_at"}
    expires = parse_instant(access["expires_at"])
    assert timedelta(minutes=29) < expires - utcnow() <= timedelta(minutes=30)

    assert _decide(client, auth, patient) == {
        "decision": "permit",
        "consent_id": None,
        "version": None,
        "reason": "emergency-access",
        "emergency_access_id": access["id"],
    }
    batch = client.post(
        "/v1/decisions:batch",
        json={
            "checks": [
                # At an instant inside the window, then now, for the same pair:
                # the access is found by either read.
                {
                    "patient_id": patient,
                    "practitioner_id": PRACTITIONER,
                    "category": "radiographs",
                    "purpose": "care-coordination",
                    "at": wire(expires - timedelta(minutes=1)),
                },
                {
                    "patient_id": patient,
                    "practitioner_id": PRACTITIONER,
                    "category": "billing",
                    "purpose": "referral",
                },
                {
                    "patient_id": patient,
                    "practitioner_id": "rpps:10009999999",
                    "category": "billing",
                    "purpose": "referral",
                },
            ]
        },
        headers=auth,
    ).get_json()["results"]
    assert [result["reason"] for result in batch] == [
        "emergency-access",
        "emergency-access",
        "no-consent",
    ]
    # Past its end, and before it opened, the access answers nothing.
    later = _decide(client, auth, patient, at=wire(expires + timedelta(seconds=1)))
    earlier = _decide(client, auth, patient, at=wire(utcnow() - timedelta(hours=1)))
    assert later["decision"] == earlier["decision"] == "deny"

    ended = client.post(f"/v1/emergency-access/{access['id']}/end", headers=auth)
    assert ended.status_code == 200, ended.get_json()
    assert ended.get_json()["status"] == "ended"
    assert ended.get_json()["closed_by"].startswith("client:")
    assert _decide(client, auth, patient)["reason"] == "denied-by-consent"
    assert_problem(client.post(f"/v1/emergency-access/{access['id']}/end", headers=auth), 409)

    events = _events(database)
    assert [(data["change"], data["version"]) for _, data in events] == [
        ("opened", 1),
        ("ended", 2),
    ]
    assert {subject for subject, _ in events} == {access["id"]}
    for _, data in events:
        assert_valid_event_data("consent.emergency-access", data)
        assert "justification" not in data

    audited = _audit(database, "emergency-access.")
    assert [action for action, _ in audited] == [
        "emergency-access.opened",
        "emergency-access.ended",
        "emergency-access.end",
    ]
    assert audited[0][1]["patient_id"] == patient
    used = [
        objects
        for action, objects in _audit(database, "decision")
        if objects.get("emergency_access_id") == access["id"]
    ]
    assert len(used) == 3  # the single decision and the batch's first two questions


def test_the_expiry_pass_closes_it_at_its_end_and_writes_its_event(
    client: FlaskClient, auth: dict[str, str], denied: dict[str, Any], database: Database
) -> None:
    patient = denied["patient_id"]
    access = _open(client, auth, patient, duration_minutes=1).get_json()
    expires = parse_instant(access["expires_at"])
    expire_due(database, clock=lambda: expires - timedelta(seconds=1))
    assert [data["change"] for _, data in _events(database)] == ["opened"]
    expire_due(database, clock=lambda: expires + timedelta(seconds=5))
    expire_due(database, clock=lambda: expires + timedelta(seconds=10))
    events = _events(database)
    assert [data["change"] for _, data in events] == ["opened", "expired"]
    expired = events[-1][1]
    assert (expired["closed_at"], expired["closed_by"]) == (access["expires_at"], "system:expiry")
    assert_valid_event_data("consent.emergency-access", expired)
    listed = client.get(f"/v1/emergency-access?patient_id={patient}", headers=auth).get_json()
    assert [(item["id"], item["status"]) for item in listed["items"]] == [(access["id"], "expired")]
    assert listed["items"][0]["justification"] == WHY
    assert_problem(client.post(f"/v1/emergency-access/{access['id']}/end", headers=auth), 409)
    assert [action for action, _ in _audit(database, "emergency-access.expired")] == [
        "emergency-access.expired"
    ]


def test_another_organization_neither_sees_nor_benefits_from_it(
    client: FlaskClient,
    auth: dict[str, str],
    api_key: KeyFactory,
    denied: dict[str, Any],
) -> None:
    patient = denied["patient_id"]
    access = _open(client, auth, patient).get_json()
    stranger = api_key(org="practice-b")
    assert _decide(client, stranger, patient)["reason"] == "no-consent"
    listed = client.get(f"/v1/emergency-access?patient_id={patient}", headers=stranger)
    assert listed.get_json() == {"items": []}
    assert_problem(client.post(f"/v1/emergency-access/{access['id']}/end", headers=stranger), 404)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"justification": "too short"}, "justification"),
        ({"justification": " " * 30}, "justification"),
        ({"justification": "x" * 1001}, "justification"),
        ({"justification": "Emergency\u0000 admission at night, unconscious"}, "justification"),
        ({"duration_minutes": 0}, "duration_minutes"),
        ({"duration_minutes": 241}, "duration_minutes"),
        ({"duration_minutes": "60"}, "duration_minutes"),
        ({"patient_id": "1 84 12 75 123 456 78"}, "patient_id"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_openings_are_422_and_record_nothing(
    client: FlaskClient,
    auth: dict[str, str],
    database: Database,
    change: dict[str, Any],
    field: str,
) -> None:
    assert_problem(_open(client, auth, "pat-1", **change), 422, field)
    assert _events(database) == []


def test_listing_needs_a_patient(client: FlaskClient, auth: dict[str, str]) -> None:
    assert_problem(client.get("/v1/emergency-access", headers=auth), 422, "patient_id")


def test_the_kit_enforces_the_services_emergency_access_events(
    client: FlaskClient, auth: dict[str, str], denied: dict[str, Any]
) -> None:
    patient = denied["patient_id"]
    access = _open(client, auth, patient).get_json()
    items = client.get("/v1/events?limit=100", headers=auth).get_json()["items"]
    view = ConsentView(Store(), organization="practice-a")
    view.store.heartbeat(lag_events=0, current_as_of=time.time())
    view.store.apply([from_structured(item) for item in items])
    answer = view.is_permitted(patient, PRACTITIONER, "radiographs", "care-coordination")
    assert (answer.decision, answer.emergency_access_id) == ("permit", access["id"])
    client.post(f"/v1/emergency-access/{access['id']}/end", headers=auth)
    after = client.get(f"/v1/events?after={items[-1]['position']}", headers=auth).get_json()
    view.store.apply([from_structured(item) for item in after["items"]])
    answer = view.is_permitted(patient, PRACTITIONER, "radiographs", "care-coordination")
    assert answer.reason == "denied-by-consent"
