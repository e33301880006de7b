"""The mailer against a real SMTP server: sends, retries through outages, gives up, erases."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from consent_service import create_app
from consent_service.cli import main
from consent_service.cli.mailer import start_in_background
from consent_service.config import Settings
from consent_service.db.mail_models import MailMessage
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.mail.mailer import Mailer, MailerOptions, Outbound
from consent_service.timefmt import utcnow
from tests.mail.smtp_server import Mailbox, smtp_server
from tests.support.broker import free_port
from tests.support.waiting import wait_until
from tests.web.conftest import request_body

ADDRESS = "marie.curie@example.org"
FAST = MailerOptions(backoff_first=60, smtp_timeout=2, idle_poll=0.05)


class Clock:
    """A clock the test moves forward, so that backoff needs no waiting."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    with smtp_server() as (controller, mailbox):
        yield controller.port, mailbox


def _settings(settings: Settings, port: int) -> Settings:
    return dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}")


def _ask(app: Flask, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    body = request_body(**{"delivery": {"email": ADDRESS}, **overrides})
    response = app.test_client().post("/v1/consent-requests", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


def _delivery(client: FlaskClient, auth: dict[str, str], request_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/consent-requests/{request_id}", headers=auth)
    assert response.status_code == 200
    delivery: dict[str, Any] = response.get_json()["delivery"]
    return delivery


def _message(database: Database) -> MailMessage:
    with database.reading() as session:
        (message,) = session.scalars(select(MailMessage)).all()
        return message


def test_a_queued_invitation_is_sent_once_with_the_form_link(
    mail_settings: Settings, database: Database, auth: dict[str, str], smtp: tuple[int, Mailbox]
) -> None:
    port, mailbox = smtp
    settings = _settings(mail_settings, port)
    app = create_app(settings, database=database)
    created = _ask(app, auth, language="en")
    mailer = Mailer(database, Outbound.from_settings(settings), options=FAST)

    assert mailer.run_once() == 1
    assert mailer.run_once() == 0, "a sent message is not sent again"
    (received,) = mailbox.wait_for(1)
    assert received["To"] == ADDRESS and received["Auto-Submitted"] == "auto-generated"
    assert received["From"] == settings.mail_from and received["Content-Language"] == "en"
    text = received.get_body(("plain",))
    assert text is not None
    link = next(line for line in text.get_content().splitlines() if line.startswith("http"))
    assert link.startswith("http://consent.test/consent/request?t=") and link.endswith("&lang=en")
    assert "radiographs" not in received.as_string().lower(), "nothing of the data asked"
    delivery = _delivery(app.test_client(), auth, created["id"])
    assert (delivery["status"], delivery["attempts"]) == ("sent", 1)
    assert delivery["sent_at"] is not None
    assert _message(database).sealed_address is not None, "kept for the confirmation"


def test_a_stopped_server_delays_the_mail_and_the_api_keeps_answering(
    mail_settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    port = free_port()
    settings = _settings(mail_settings, port)
    app = create_app(settings, database=database)
    created = _ask(app, auth)
    clock = Clock()
    mailer = Mailer(database, Outbound.from_settings(settings), options=FAST, clock=clock)

    assert mailer.run_once() == 1
    delivery = _delivery(app.test_client(), auth, created["id"])
    assert (delivery["status"], delivery["attempts"]) == ("queued", 1)
    assert mailer.run_once() == 0, "not due again before its backoff"
    assert _message(database).last_error == "TemporaryFailure"

    with smtp_server() as (controller, mailbox):
        settings = _settings(mail_settings, controller.port)
        mailer = Mailer(database, Outbound.from_settings(settings), options=FAST, clock=clock)
        clock.advance(61)
        assert mailer.run_once() == 1
        assert len(mailbox.wait_for(1)) == 1
    delivery = _delivery(app.test_client(), auth, created["id"])
    assert (delivery["status"], delivery["attempts"]) == ("sent", 2)


def test_a_hanging_server_blocks_neither_the_api_nor_other_mailers(
    mail_settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    acceptor.start()
    settings = _settings(mail_settings, listener.getsockname()[1])
    app = create_app(settings, database=database)
    created = _ask(app, auth)
    options = dataclasses.replace(FAST, smtp_timeout=3)
    mailer = Mailer(database, Outbound.from_settings(settings), options=options)
    sending = threading.Thread(target=mailer.run_once)
    try:
        sending.start()
        wait_until(lambda: accepted, what="the mailer to connect")
        # While the mailer waits on the silent server, the API answers at once
        # and a second mailer finds the message claimed.
        started = time.monotonic()
        _ask(app, auth, delivery=None)
        assert _delivery(app.test_client(), auth, created["id"])["attempts"] == 1
        assert time.monotonic() - started < 2
        assert Mailer(database, Outbound.from_settings(settings), options=options).run_once() == 0
        sending.join(timeout=10)
    finally:
        for connection in accepted:
            connection.close()
        listener.close()
    message = _message(database)
    assert (message.status, message.last_error) == ("queued", "TemporaryFailure")


def test_five_refusals_fail_the_message_and_erase_the_address(
    mail_settings: Settings, database: Database, auth: dict[str, str], smtp: tuple[int, Mailbox]
) -> None:
    port, mailbox = smtp
    settings = _settings(mail_settings, port)
    app = create_app(settings, database=database)
    created = _ask(app, auth)
    mailbox.refuse_with = "451 4.3.0 try again later"
    clock = Clock()
    mailer = Mailer(database, Outbound.from_settings(settings), options=FAST, clock=clock)
    for attempt in range(1, 6):
        assert mailer.run_once() == 1
        assert _message(database).attempts == attempt
        clock.advance(60 * 4**attempt)
    assert mailer.run_once() == 0
    message = _message(database)
    assert (message.status, message.sealed_address) == ("failed", None)
    delivery = _delivery(app.test_client(), auth, created["id"])
    assert (delivery["status"], delivery["attempts"], delivery["sent_at"]) == ("failed", 5, None)
    assert mailbox.messages == []


def test_a_name_no_header_can_carry_fails_the_message_not_the_mailer(
    mail_settings: Settings, database: Database, auth: dict[str, str], smtp: tuple[int, Mailbox]
) -> None:
    port, mailbox = smtp
    settings = _settings(mail_settings, port)
    app = create_app(settings, database=database)
    first, second = _ask(app, auth), _ask(app, auth)
    # Stored before the API refused such names: a line separator in the practice's name.
    with database.transaction() as session:
        session.execute(
            update(ConsentRequest)
            .where(ConsentRequest.id == first["id"])
            .values(organization_name="Cabinet\u2028Bcc: all@example.org")
        )
    assert Mailer(database, Outbound.from_settings(settings), options=FAST).run_once() == 2
    assert len(mailbox.wait_for(1)) == 1
    client = app.test_client()
    assert _delivery(client, auth, first["id"])["status"] == "failed"
    assert _delivery(client, auth, second["id"])["status"] == "sent"


def test_a_permanent_refusal_fails_at_once(
    mail_settings: Settings, database: Database, auth: dict[str, str], smtp: tuple[int, Mailbox]
) -> None:
    port, mailbox = smtp
    settings = _settings(mail_settings, port)
    _ask(create_app(settings, database=database), auth)
    mailbox.refuse_with = "550 5.1.1 no such user"
    assert Mailer(database, Outbound.from_settings(settings), options=FAST).run_once() == 1
    message = _message(database)
    assert (message.status, message.attempts, message.last_error) == (
        "failed",
        1,
        "PermanentFailure",
    )
    assert message.sealed_address is None


def test_an_invitation_for_a_closed_request_is_not_sent_and_its_address_erased(
    mail_settings: Settings, database: Database, auth: dict[str, str], smtp: tuple[int, Mailbox]
) -> None:
    port, mailbox = smtp
    settings = _settings(mail_settings, port)
    _ask(create_app(settings, database=database), auth, expires_in=300)
    clock = Clock()
    clock.advance(301)
    assert Mailer(database, Outbound.from_settings(settings), clock=clock).run_once() == 0
    message = _message(database)
    assert (message.status, message.sealed_address, message.last_error) == (
        "failed",
        None,
        "RequestClosed",
    )
    assert mailbox.messages == []


def test_the_relay_runs_the_mailer_and_the_command_needs_smtp(
    mail_settings: Settings, database: Database, auth: dict[str, str], smtp: tuple[int, Mailbox]
) -> None:
    port, mailbox = smtp
    settings = _settings(mail_settings, port)
    _ask(create_app(settings, database=database), auth)
    stop = threading.Event()
    thread = start_in_background(settings, database, stop)
    assert thread is not None
    try:
        assert len(mailbox.wait_for(1)) == 1
    finally:
        stop.set()
        thread.join(timeout=10)
    assert start_in_background(dataclasses.replace(settings, smtp_url=None), database, stop) is None

    result = CliRunner().invoke(main, ["mailer"], env={"CONSENT_DATABASE_URL": database.url})
    assert result.exit_code == 2
    assert result.output.strip() == ("consent-service: CONSENT_SMTP_URL is unset: no mail to send.")
