"""After the answer: one confirmation to the invitation's address, then the address is gone."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service import create_app
from consent_service.audit import writer as audit_writer
from consent_service.config import Settings
from consent_service.db.mail_models import MailMessage
from consent_service.db.session import Database
from consent_service.mail.mailer import Mailer, MailerOptions, Outbound
from tests.mail.smtp_server import smtp_server
from tests.web.conftest import forms, local, request_body

ADDRESS = "jeanne.baret@example.org"


def _answer(client: FlaskClient, form_url: str, choice: str) -> None:
    page = client.get(local(form_url))
    assert page.status_code == 200
    (form,) = forms(page.get_data(as_text=True))
    response = client.post(form.action, data=form.submission(answer=choice))
    assert response.status_code == 200, response.get_data(as_text=True)


def _service_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the service logged (not the test's SMTP server, whose log quotes every line)."""
    return "\n".join(
        record.getMessage() + str(record.__dict__)
        for record in caplog.records
        if not record.name.startswith("mail.log")
    )


def _messages(database: Database) -> dict[str, MailMessage]:
    with database.reading() as session:
        return {m.kind: m for m in session.scalars(select(MailMessage))}


@pytest.mark.parametrize("choice", ["grant", "refuse"])
def test_the_answer_is_confirmed_and_the_address_erased(
    mail_settings: Settings,
    database: Database,
    auth: dict[str, str],
    choice: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server() as (controller, mailbox):
        settings = dataclasses.replace(
            mail_settings, smtp_url=f"smtp://127.0.0.1:{controller.port}"
        )
        client = create_app(settings, database=database).test_client()
        body = request_body(delivery={"email": ADDRESS}, language="en")
        created: dict[str, Any] = client.post(
            "/v1/consent-requests", json=body, headers=auth
        ).get_json()
        mailer = Mailer(database, Outbound.from_settings(settings), options=MailerOptions())
        assert mailer.run_once() == 1
        _answer(client, created["form_url"], choice)

        queued = _messages(database)
        assert queued["invitation"].sealed_address is None, "moved to the confirmation"
        assert queued["confirmation"].status == "queued"
        assert mailer.run_once() == 1
        invitation, confirmation = mailbox.wait_for(2)

    assert confirmation["To"] == ADDRESS
    assert confirmation["Message-ID"] != invitation["Message-ID"]
    text = confirmation.get_body(("plain",))
    assert text is not None
    words = text.get_content()
    assert ("You agreed" if choice == "grant" else "You refused") in words
    assert "Version of the consent text: " in words and "/en." in words
    assert "http://consent.test/consent/mine?t=" in words
    sent = _messages(database)
    assert {kind: m.sealed_address for kind, m in sent.items()} == {
        "invitation": None,
        "confirmation": None,
    }
    assert sent["confirmation"].status == "sent"
    # The invitation's delivery status stays what it was.
    delivery = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert delivery["delivery"]["status"] == "sent"
    assert mailer.run_once() == 0, "one confirmation, once"
    logged = _service_log(caplog)
    assert "sent (attempt 1)" in logged and "jeanne" not in logged


def test_an_unmailed_request_gets_no_confirmation(
    mail_client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = mail_client.post("/v1/consent-requests", json=request_body(), headers=auth)
    _answer(mail_client, created.get_json()["form_url"], "grant")
    assert _messages(database) == {}


def test_the_address_is_nowhere_in_the_database_files_or_the_logs(
    mail_settings: Settings,
    database: Database,
    auth: dict[str, str],
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if backend != "sqlite":
        pytest.skip("reads the SQLite file and its write-ahead log")
    caplog.set_level(logging.DEBUG)
    with smtp_server() as (controller, mailbox):
        settings = dataclasses.replace(
            mail_settings, smtp_url=f"smtp://127.0.0.1:{controller.port}"
        )
        client = create_app(settings, database=database).test_client()
        created = client.post(
            "/v1/consent-requests", json=request_body(delivery={"email": ADDRESS}), headers=auth
        ).get_json()
        mailer = Mailer(database, Outbound.from_settings(settings))
        mailer.run_once()
        _answer(client, created["form_url"], "grant")
        mailer.run_once()
        assert len(mailbox.wait_for(2)) == 2
    audit_writer.flush(timeout=10)

    path = Path(database.engine.url.database or "")
    files = [candidate for candidate in (path, Path(f"{path}-wal")) if candidate.exists()]
    assert path in files
    for needle in (ADDRESS.encode(), b"jeanne.baret", ADDRESS.encode("utf-16-le")):
        for file in files:
            assert needle not in file.read_bytes(), f"{needle!r} found in {file.name}"
    logged = _service_log(caplog)
    assert "sent (attempt 1)" in logged and "jeanne" not in logged
