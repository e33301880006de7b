"""The "my consents" page tells the patient when the practice's software applied a withdrawal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.services.clients import create_client
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory
from tests.web.conftest import Ask, forms, local

APPLIED_AT = datetime(2026, 3, 12, 13, 5, tzinfo=UTC)  # 14 h 05 in Paris


@pytest.fixture
def auth(api_key: KeyFactory) -> dict[str, str]:
    """The practice desk: it writes consents and does not acknowledge events."""
    return api_key(scopes=("consents:read", "consents:write"))


def _subscriber(database: Database, name: str) -> dict[str, str]:
    with database.transaction() as session:
        _, key = create_client(
            session,
            organization="practice-a",
            scopes=["events:read", "events:ack"],
            name=name,
            now=utcnow(),
        )
    return {"Authorization": f"Bearer {key}"}


def _withdrawn(
    client: FlaskClient, auth: dict[str, str], ask: Ask, **overrides: Any
) -> tuple[dict[str, Any], str]:
    created = ask(**overrides)
    (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
    assert client.post(form.action, data=form.submission(answer="grant")).status_code == 200
    (withdraw,) = forms(client.get(local(created["manage_url"])).get_data(as_text=True))
    assert client.post(withdraw.action, data=withdraw.submission()).status_code == 200
    consent_id = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()[
        "consent_id"
    ]
    return created, consent_id


def _ack(client: FlaskClient, database: Database, key: dict[str, str], consent_id: str) -> None:
    with database.reading() as session:
        event_id = session.scalar(
            select(OutboxEvent.event_id).where(
                OutboxEvent.consent_id == consent_id, OutboxEvent.consent_version == 2
            )
        )
    ack = {
        "event_id": event_id,
        "consent_id": consent_id,
        "version": 2,
        "applied_at": APPLIED_AT.isoformat(),
    }
    response = client.post("/v1/subscribers/acks", json={"acks": [ack]}, headers=key)
    assert response.get_json() == {"accepted": 1, "refused": 0}


def test_a_withdrawal_is_pending_until_every_system_applied_it(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    first, second = _subscriber(database, "agenda"), _subscriber(database, "imagerie")
    created, consent_id = _withdrawn(client, auth, ask)
    page = local(created["manage_url"])

    html = client.get(page).get_data(as_text=True)
    assert "Retrait en cours de prise en compte" in html and "(0 sur 2" in html

    _ack(client, database, first, consent_id)
    assert "(1 sur 2" in client.get(page).get_data(as_text=True)

    _ack(client, database, second, consent_id)
    html = client.get(page).get_data(as_text=True)
    assert "Retrait pris en compte par 2 logiciels sur 2 le 12 mars 2026 à 14 h 05" in html
    assert "en cours" not in html


def test_the_page_says_it_in_english_too(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    only = _subscriber(database, "agenda")
    created, consent_id = _withdrawn(client, auth, ask, language="en")
    page = local(created["manage_url"])
    assert "being applied by the practice's software (0 of 1" in client.get(page).get_data(
        as_text=True
    ).replace("&#39;", "'")

    _ack(client, database, only, consent_id)

    html = client.get(page).get_data(as_text=True).replace("&#39;", "'")
    assert "Withdrawal applied by the practice's software on 12 March 2026 at 14:05" in html


def test_nothing_is_said_without_acknowledging_software(
    client: FlaskClient, auth: dict[str, str], ask: Ask
) -> None:
    created, _ = _withdrawn(client, auth, ask)

    html = client.get(local(created["manage_url"])).get_data(as_text=True)

    assert "Retiré" in html
    assert "Retrait" not in html


def test_active_consents_say_nothing_about_software(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    _subscriber(database, "agenda")
    created = ask()
    (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
    assert client.post(form.action, data=form.submission(answer="grant")).status_code == 200

    html = client.get(local(created["manage_url"])).get_data(as_text=True)

    assert "Retrait" not in html
