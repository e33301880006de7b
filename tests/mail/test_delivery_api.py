"""POST /v1/consent-requests with ``delivery``: validated, queued with the request, never shown."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.db.mail_models import MailMessage
from consent_service.db.session import Database
from tests.web.conftest import request_body

ADDRESS = "marie.curie@example.org"


def _create(client: FlaskClient, auth: dict[str, str], **overrides: Any) -> Any:
    return client.post("/v1/consent-requests", json=request_body(**overrides), headers=auth)


def test_a_mailed_request_is_queued_with_its_sealed_address(
    mail_client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    response = _create(mail_client, auth, delivery={"email": ADDRESS})

    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    queued = {"channel": "email", "status": "queued", "attempts": 0, "sent_at": None}
    assert created["delivery"] == queued
    assert created["form_url"].startswith("http://consent.test/consent/request?")
    read = mail_client.get(f"/v1/consent-requests/{created['id']}", headers=auth)
    assert read.get_json()["delivery"] == queued
    assert ADDRESS not in response.get_data(as_text=True) + read.get_data(as_text=True)
    with database.reading() as session:
        (message,) = session.scalars(select(MailMessage)).all()
    assert (message.request_id, message.kind, message.status) == (
        created["id"],
        "invitation",
        "queued",
    )
    assert message.sealed_address is not None and "marie" not in message.sealed_address


def test_a_request_without_delivery_shows_none(
    mail_client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = _create(mail_client, auth).get_json()
    assert created["delivery"] is None
    with database.reading() as session:
        assert session.scalars(select(MailMessage)).all() == []


def test_delivery_is_refused_where_no_mail_is_configured(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    response = _create(client, auth, delivery={"email": ADDRESS})
    assert response.status_code == 422
    problem = response.get_json()
    assert [error["field"] for error in problem["errors"]] == ["delivery"]
    assert ADDRESS not in response.get_data(as_text=True)
    with database.reading() as session:
        assert session.scalars(select(MailMessage)).all() == []


@pytest.mark.parametrize(
    ("delivery", "field"),
    [
        ({"email": "not-an-address"}, "delivery.email"),
        ({"email": "marie@example.org\r\nBcc: all@example.org"}, "delivery.email"),
        ({"email": "marie@example.org, paul@example.org"}, "delivery.email"),
        ({"email": "Marie <marie@example.org>"}, "delivery.email"),
        ({"email": "m" * 250 + "@example.org"}, "delivery.email"),
        ({"email": 42}, "delivery.email"),
        ({}, "delivery.email"),
        ({"email": ADDRESS, "sms": "+33600000000"}, "delivery.sms"),
        ("marie@example.org", "delivery._schema"),
    ],
)
def test_bad_deliveries_are_422_without_echoing_the_value(
    mail_client: FlaskClient, auth: dict[str, str], delivery: Any, field: str
) -> None:
    response = _create(mail_client, auth, delivery=delivery)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in [error["field"] for error in response.get_json()["errors"]]
    if isinstance(delivery, dict) and isinstance(delivery.get("email"), str):
        assert delivery["email"] not in response.get_data(as_text=True)


@pytest.mark.parametrize("name", ["Cabinet\u2028Bcc: all@example.org", "Cabinet\x0bdu Parc"])
def test_names_that_would_break_a_mail_header_are_refused(
    mail_client: FlaskClient, auth: dict[str, str], name: str
) -> None:
    response = _create(mail_client, auth, organization_name=name, delivery={"email": ADDRESS})
    assert response.status_code == 422
    assert {error["field"] for error in response.get_json()["errors"]} == {"organization_name"}
