"""Answering a request on the form: grant, refuse, replays, expiry, races."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from consent_service.db.models import Consent, ConsentVersion, OutboxEvent
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.services import requests as service
from consent_service.timefmt import utcnow
from tests.web.conftest import Ask, forms, local


def _open(client: FlaskClient, url: str) -> tuple[int, str]:
    response = client.get(local(url))
    return response.status_code, response.get_data(as_text=True)


def _answer(client: FlaskClient, created: dict[str, Any], choice: str) -> tuple[int, str]:
    status, html = _open(client, created["form_url"])
    assert status == 200, html
    (form,) = forms(html)
    assert ("answer", "grant") in form.buttons and ("answer", "refuse") in form.buttons
    response = client.post(form.action, data=form.submission(answer=choice))
    return response.status_code, response.get_data(as_text=True)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _count(database: Database, model: Any) -> int:
    with database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_the_form_shows_who_what_why_how_long_and_the_text(client: FlaskClient, ask: Ask) -> None:
    status, html = _open(client, ask()["form_url"])
    assert status == 200
    assert '<html lang="fr">' in html
    for expected in (
        "Cabinet dentaire du Parc",
        "Dr Camille Martin",
        "Orthodontiste",
        "rpps:10003456789",
        "Votre schéma dentaire",
        "Vos radiographies",
        "Coordonner vos soins",
        "Pendant 365 jours",
        "Consentement au partage de données de santé",
        "Version 2026-01",
        "J&#39;accepte",
        "Je refuse",
    ):
        assert expected in html, expected


def test_grant_records_the_consent_its_version_and_event(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    created = ask()
    status, html = _answer(client, created, "grant")
    assert status == 200
    assert "votre accord est enregistré" in html
    assert "/consent/mine?t=" in html

    answered = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert answered["status"] == "granted" and answered["form_url"] is None
    assert answered["policy_version"] == "2026-01/fr"
    consent = client.get(f"/v1/consents/{answered['consent_id']}", headers=auth).get_json()
    assert consent["patient_id"] == created["patient_id"]
    assert consent["categories"] == ["dental-chart", "radiographs"]
    assert consent["decision"] == "permit" and consent["status"] == "active"
    assert consent["actor"] == "patient" and consent["change"] == "granted"
    collection = consent["collection"]
    assert collection["method"] == "web-form"
    assert collection["policy_version"] == "2026-01/fr"
    evidence = collection["evidence_ref"]
    assert evidence.startswith(f"consent-request:{created['id']};answered-at:")
    assert ";text:2026-01/fr;sha256:" in evidence and len(evidence) <= 256
    valid_for = _instant(consent["valid_until"]) - _instant(consent["valid_from"])
    assert valid_for == timedelta(days=365)

    with database.reading() as session:
        event = session.scalars(select(OutboxEvent)).one()
    assert event.type == "consent.granted" and event.consent_id == consent["id"]
    assert json.loads(event.payload)["collection"]["method"] == "web-form"


def test_refusal_closes_the_request_without_a_consent(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    created = ask(language="en")
    status, html = _answer(client, created, "refuse")
    assert status == 200 and "Your refusal is recorded" in html
    answered = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert answered["status"] == "refused" and answered["consent_id"] is None
    assert _count(database, Consent) == 0 and _count(database, OutboxEvent) == 0


def test_a_replayed_post_or_reload_changes_nothing(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    created = ask()
    _, html = _open(client, created["form_url"])
    (form,) = forms(html)
    first = client.post(form.action, data=form.submission(answer="grant"))
    assert first.status_code == 200
    for choice in ("grant", "refuse"):
        replay = client.post(form.action, data=form.submission(answer=choice))
        assert replay.status_code == 409
        assert "Vous avez déjà répondu" in replay.get_data(as_text=True)
    reopened, html = _open(client, created["form_url"])
    assert reopened == 409 and "/consent/mine?t=" in html
    assert _count(database, Consent) == 1 and _count(database, ConsentVersion) == 1
    with database.reading() as session:
        assert session.scalars(select(ConsentRequest.status)).one() == "granted"


def test_concurrent_answers_let_exactly_one_through(
    app: Flask, ask: Ask, database: Database
) -> None:
    created = ask()
    clients = [app.test_client() for _ in range(4)]
    submissions = []
    for each in clients:
        _, html = _open(each, created["form_url"])
        (form,) = forms(html)
        submissions.append((each, form))
    statuses: list[int] = []
    barrier = threading.Barrier(len(submissions))

    def submit(each: FlaskClient, form: Any) -> None:
        barrier.wait()
        statuses.append(each.post(form.action, data=form.submission(answer="grant")).status_code)

    threads = [threading.Thread(target=submit, args=pair) for pair in submissions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert _count(database, Consent) == 1 and _count(database, OutboxEvent) == 1


def _age(database: Database, request_id: str, by: timedelta) -> None:
    with database.transaction() as session:
        session.execute(
            update(ConsentRequest)
            .where(ConsentRequest.id == request_id)
            .values(expires_at=utcnow() - by)
        )


def test_an_expired_request_is_gone_and_reads_do_not_write(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    created = ask(expires_in=300)
    _, html = _open(client, created["form_url"])
    (form,) = forms(html)
    _age(database, created["id"], timedelta(seconds=1))

    status, html = _open(client, created["form_url"])
    assert status == 410 and "Ce lien a expiré" in html
    shown = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert shown["status"] == "expired" and shown["form_url"] is None
    with database.reading() as session:
        assert session.scalars(select(ConsentRequest.status)).one() == "pending"

    late = client.post(form.action, data=form.submission(answer="grant"))
    assert late.status_code == 410
    with database.reading() as session:
        assert session.scalars(select(ConsentRequest.status)).one() == "expired"
    assert _count(database, Consent) == 0


def test_expire_requests_marks_only_overdue_pending_ones(ask: Ask, database: Database) -> None:
    overdue, fresh, answered = ask(), ask(), ask()
    _age(database, overdue["id"], timedelta(minutes=1))
    with database.transaction() as session:
        session.execute(
            update(ConsentRequest)
            .where(ConsentRequest.id == answered["id"])
            .values(status="refused", expires_at=utcnow() - timedelta(minutes=1))
        )
    with database.transaction() as session:
        assert service.expire_requests(session, now=utcnow()) == 1
    with database.transaction() as session:
        assert service.expire_requests(session, now=utcnow()) == 0
    with database.reading() as session:
        statuses = dict(session.execute(select(ConsentRequest.id, ConsentRequest.status)).all())
    assert statuses == {overdue["id"]: "expired", fresh["id"]: "pending", answered["id"]: "refused"}


def test_answer_with_an_unknown_text_version_is_refused(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    _, html = _open(client, ask()["form_url"])
    (form,) = forms(html)
    response = client.post(form.action, data=form.submission(answer="grant", text_version="1999"))
    assert response.status_code == 400
    bogus = client.post(form.action, data=form.submission(answer="maybe"))
    assert bogus.status_code == 400
    assert _count(database, Consent) == 0
    with database.reading() as session:
        assert session.scalars(select(ConsentRequest.status)).one() == "pending"
