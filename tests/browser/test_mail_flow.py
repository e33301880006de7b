"""End to end by mail: request → invitation in an SMTP server → code and grant in Chromium →
confirmation received → the address erased."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from werkzeug.serving import make_server

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.mail_models import MailMessage
from consent_service.db.session import Database
from consent_service.mail.mailer import Mailer, Outbound
from tests.browser.conftest import QuietHandler, api, shot
from tests.conftest import TEST_SECRET_KEYS, KeyFactory
from tests.mail.smtp_server import smtp_server
from tests.web.conftest import request_body

pytestmark = pytest.mark.slow

ADDRESS = "sophie.germain@example.org"


@pytest.fixture
def mailing_service(database: Database) -> Iterator[tuple[str, Settings, Any]]:
    """The app with mail on, served on a free port that is also its public address."""
    with smtp_server() as (controller, mailbox):
        app_holder: dict[str, Any] = {}
        server = make_server(
            "127.0.0.1",
            0,
            lambda environ, start: app_holder["app"](environ, start),
            threaded=True,
            request_handler=QuietHandler,
        )
        base = f"http://127.0.0.1:{server.port}"
        settings = Settings(
            database_url=database.url,
            secret_keys=TEST_SECRET_KEYS,
            rate_limits="off",
            public_url=base,
            smtp_url=f"smtp://127.0.0.1:{controller.port}",
            mail_from="Cabinet du Parc <noreply@cabinet.example>",
            mail_keys=TEST_SECRET_KEYS,
        )
        app_holder["app"] = create_app(settings, database=database)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield base, settings, mailbox
        finally:
            server.shutdown()
            thread.join(timeout=10)
            server.server_close()


def test_the_mailed_link_opens_the_form_and_the_grant_is_confirmed(
    page: Page,
    mailing_service: tuple[str, Settings, Any],
    api_key: KeyFactory,
    database: Database,
    backend: str,
) -> None:
    base, settings, mailbox = mailing_service
    auth = api_key()
    body = request_body(delivery={"email": ADDRESS}, verification="code")
    status, created = api(base, "POST", "/v1/consent-requests", auth, body)
    assert status == 201, created
    mailer = Mailer(database, Outbound.from_settings(settings))

    assert mailer.run_once() == 1
    (invitation,) = mailbox.wait_for(1)
    assert invitation["To"] == ADDRESS
    plain = invitation.get_body(("plain",))
    assert plain is not None
    link = next(line for line in plain.get_content().splitlines() if line.startswith(base))

    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Code de vérification")
    expect(page.get_by_text("Dr Camille Martin")).to_have_count(0)
    page.get_by_label("Code à 6 chiffres").fill(created["verification_code"])
    page.get_by_role("button", name="Continuer").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Demande de consentement")
    shot(page, f"mail-01-form-after-code-{backend}")
    page.get_by_role("button", name="J'accepte").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci, votre accord est enregistré")

    assert mailer.run_once() == 1
    _, confirmation = mailbox.wait_for(2)
    assert confirmation["To"] == ADDRESS
    words = confirmation.get_body(("plain",))
    assert words is not None and "Vous avez accepté" in words.get_content()
    status, answered = api(base, "GET", f"/v1/consent-requests/{created['id']}", auth)
    assert answered["status"] == "granted" and answered["delivery"]["status"] == "sent"
    status, consent = api(base, "GET", f"/v1/consents/{answered['consent_id']}", auth)
    assert consent["collection"]["evidence_ref"].endswith(";second-channel-code:checked")
    with database.reading() as session:
        assert session.scalars(select(MailMessage.sealed_address)).all() == [None, None]
