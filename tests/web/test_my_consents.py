"""The "my consents" page and withdrawal by the patient."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.audit import writer as audit_writer
from consent_service.db.audit_models import AuditEntry
from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.wording import format_moment
from tests.conftest import consent_body
from tests.web.conftest import Ask, forms, local


def _grant(client: FlaskClient, created: dict[str, Any]) -> None:
    (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
    assert client.post(form.action, data=form.submission(answer="grant")).status_code == 200


def test_lists_the_patients_consents_in_this_organization(
    client: FlaskClient, auth: dict[str, str], api_key: Any, ask: Ask
) -> None:
    created = ask()
    _grant(client, created)
    patient = created["patient_id"]
    paper = consent_body(patient_id=patient, practitioner_id="rpps:10009999999")
    assert client.post("/v1/consents", json=paper, headers=auth).status_code == 201
    elsewhere = consent_body(patient_id=patient, practitioner_id="rpps:10008888888")
    other_org = api_key(org="practice-b")
    assert client.post("/v1/consents", json=elsewhere, headers=other_org).status_code == 201
    someone_else = consent_body(practitioner_id="rpps:10007777777")
    assert client.post("/v1/consents", json=someone_else, headers=auth).status_code == 201

    page = client.get(local(created["manage_url"]))
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Mes consentements" in html
    assert "Dr Camille Martin" in html and "rpps:10009999999" in html
    assert "rpps:10008888888" not in html and "rpps:10007777777" not in html
    assert "Votre schéma dentaire" in html and "Coordonner vos soins" in html
    assert html.count("Retirer ce consentement") == 2
    assert len(forms(html)) == 2


def test_withdraw_revokes_as_the_patient_with_a_version_and_event(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    created = ask()
    _grant(client, created)
    consent_id = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()[
        "consent_id"
    ]
    html = client.get(local(created["manage_url"])).get_data(as_text=True)
    (form,) = forms(html)
    assert form.fields["consent_id"] == consent_id

    withdrawn = client.post(form.action, data=form.submission())
    assert withdrawn.status_code == 200
    assert "Votre consentement est retiré" in withdrawn.get_data(as_text=True)
    consent = client.get(f"/v1/consents/{consent_id}", headers=auth).get_json()
    assert consent["status"] == "revoked" and consent["version"] == 2
    assert consent["actor"] == "patient" and consent["change"] == "revoked"
    with database.reading() as session:
        types = [
            event.type for event in session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        ]
        last = session.scalars(select(OutboxEvent).order_by(OutboxEvent.id.desc())).first()
    assert types == ["consent.granted", "consent.revoked"]
    assert last is not None and json.loads(last.payload)["actor"] == "patient"

    again = client.post(form.action, data=form.submission())
    assert again.status_code == 409
    listing = client.get(local(created["manage_url"])).get_data(as_text=True)
    assert "Retiré" in listing and "Retirer ce consentement" not in listing


def test_cannot_withdraw_another_patients_consent(
    client: FlaskClient, auth: dict[str, str], ask: Ask
) -> None:
    mine, theirs = ask(), ask()
    _grant(client, mine)
    _grant(client, theirs)
    their_consent = client.get(f"/v1/consent-requests/{theirs['id']}", headers=auth).get_json()[
        "consent_id"
    ]
    (form,) = forms(client.get(local(mine["manage_url"])).get_data(as_text=True))
    attempt = client.post(form.action, data=form.submission(consent_id=their_consent))
    assert attempt.status_code == 404
    bogus = client.post(form.action, data=form.submission(consent_id="not-a-uuid"))
    assert bogus.status_code == 400
    assert (
        client.get(f"/v1/consents/{their_consent}", headers=auth).get_json()["status"] == "active"
    )


def test_withdraw_needs_the_csrf_token(client: FlaskClient, auth: dict[str, str], ask: Ask) -> None:
    created = ask()
    _grant(client, created)
    (form,) = forms(client.get(local(created["manage_url"])).get_data(as_text=True))
    data = {k: v for k, v in form.submission().items() if k != "csrf_token"}
    assert client.post(form.action, data=data).status_code == 403
    consent_id = form.fields["consent_id"]
    assert client.get(f"/v1/consents/{consent_id}", headers=auth).get_json()["status"] == "active"


def test_empty_list_in_english(client: FlaskClient, ask: Ask) -> None:
    created = ask(language="en")
    html = client.get(local(created["manage_url"])).get_data(as_text=True)
    assert "No consent is recorded for you." in html and not forms(html)


def test_lists_the_patients_emergency_accesses_who_when_why_how_long(
    client: FlaskClient, auth: dict[str, str], api_key: Any, ask: Ask, database: Database
) -> None:
    created = ask()
    _grant(client, created)
    patient = created["patient_id"]
    why = "Patient inconscient admis aux urgences, allergies à vérifier."
    body = {
        "patient_id": patient,
        "practitioner_id": "rpps:10003456789",
        "justification": why,
        "duration_minutes": 90,
    }
    opened = client.post("/v1/emergency-access", json=body, headers=auth).get_json()
    elsewhere = {**body, "justification": "Another organization's emergency, not shown here."}
    other_org = api_key(org="practice-b")
    assert client.post("/v1/emergency-access", json=elsewhere, headers=other_org).status_code == 201

    html = client.get(local(created["manage_url"])).get_data(as_text=True)
    assert "Accès en urgence à vos données" in html
    assert f'id="emergency-{opened["id"]}"' in html
    section = html[html.index('id="emergency-access"') :]
    assert "Dr Camille Martin" in section and "En cours" in section
    assert why in section
    assert "Another organization" not in html
    expires = datetime.fromisoformat(opened["expires_at"].replace("Z", "+00:00"))
    assert format_moment("fr", expires) in section

    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        objects = session.scalars(
            select(AuditEntry.objects).where(AuditEntry.action == "patient.consents")
        ).all()
    assert [json.loads(entry)["emergency_access_ids"] for entry in objects] == [[opened["id"]]]


def test_no_emergency_section_without_one(client: FlaskClient, ask: Ask) -> None:
    created = ask()
    _grant(client, created)
    html = client.get(local(created["manage_url"])).get_data(as_text=True)
    assert "Accès en urgence" not in html
