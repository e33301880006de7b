"""Links and forms under attack, in a real browser: tampering, expiry, purpose, keys, CSRF."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select, update

from consent_service.db.models import Consent
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.timefmt import utcnow
from tests.browser.conftest import Serve, api, shot
from tests.conftest import TEST_SECRET_KEYS, KeyFactory
from tests.web.conftest import request_body

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

OLD_KEY = TEST_SECRET_KEYS[0]
NEW_KEY = "rotated-signing-key-fedcba9876543210"


def _ask(base: str, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    status, created = api(base, "POST", "/v1/consent-requests", auth, request_body(**overrides))
    assert status == 201, created
    return created


def _h1(page: Page) -> Any:
    return page.get_by_role("heading", level=1)


def _unchanged(database: Database) -> None:
    with database.reading() as session:
        assert set(session.scalars(select(ConsentRequest.status))) == {"pending"}
        assert session.scalar(select(func.count()).select_from(Consent)) == 0


def test_tampered_link(page: Page, serve: Serve, api_key: KeyFactory, database: Database) -> None:
    created = _ask(serve(), api_key())
    token = parse_qs(urlsplit(created["form_url"]).query)["t"][0]
    tampered = created["form_url"].replace(
        token, token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
    )
    response = page.goto(tampered)
    assert response is not None and response.status == 400
    expect(_h1(page)).to_have_text("Ce lien n'est pas valide")
    expect(page.get_by_text("Que faire ?")).to_be_visible()
    shot(page, "20-error-tampered-fr")
    page.get_by_role("link", name="English").click()
    expect(_h1(page)).to_have_text("This link is not valid")
    shot(page, "21-error-tampered-en")
    _unchanged(database)


def test_expired_request(page: Page, serve: Serve, api_key: KeyFactory, database: Database) -> None:
    base, auth = serve(), api_key()
    created = _ask(base, auth, expires_in=300)
    page.goto(created["form_url"])
    with database.transaction() as session:
        session.execute(update(ConsentRequest).values(expires_at=utcnow() - timedelta(seconds=1)))
    page.get_by_role("button", name="J'accepte").click()
    expect(_h1(page)).to_have_text("Ce lien a expiré")
    shot(page, "22-error-expired-fr")
    response = page.goto(created["form_url"])
    assert response is not None and response.status == 410
    status, shown = api(base, "GET", f"/v1/consent-requests/{created['id']}", auth)
    assert status == 200, shown
    assert shown["status"] == "expired"
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(Consent)) == 0


def test_wrong_purpose_and_unknown(page: Page, serve: Serve, api_key: KeyFactory) -> None:
    created = _ask(serve(), api_key())
    manage_token = parse_qs(urlsplit(created["manage_url"]).query)["t"][0]
    as_answer = created["form_url"].split("?")[0] + f"?t={manage_token}&lang=fr"
    response = page.goto(as_answer)
    assert response is not None and response.status == 400
    expect(_h1(page)).to_have_text("Ce lien n'est pas valide")
    response = page.goto(created["form_url"].split("/consent/")[0] + "/consent/elsewhere")
    assert response is not None and response.status == 404
    expect(_h1(page)).to_have_text("Demande introuvable")
    shot(page, "23-error-unknown-fr")


def test_previous_key_works_while_listed(page: Page, serve: Serve, api_key: KeyFactory) -> None:
    before_rotation = serve(keys=(OLD_KEY,))
    auth = api_key()
    first, second = _ask(before_rotation, auth), _ask(before_rotation, auth)

    rotated = serve(keys=(NEW_KEY, OLD_KEY))
    page.goto(first["form_url"].replace(before_rotation, rotated))
    page.get_by_role("button", name="J'accepte").click()
    expect(_h1(page)).to_have_text("Merci, votre accord est enregistré")
    # The confirmation's "my consents" link is signed with the new key.
    page.get_by_role("link", name="Voir ou retirer mes consentements").click()
    expect(_h1(page)).to_have_text("Mes consentements")

    retired = serve(keys=(NEW_KEY,))
    response = page.goto(second["form_url"].replace(before_rotation, retired))
    assert response is not None and response.status == 400
    expect(_h1(page)).to_have_text("Ce lien n'est pas valide")
    shot(page, "24-error-retired-key-fr")


def test_post_without_csrf_token_changes_nothing(
    page: Page, serve: Serve, api_key: KeyFactory, database: Database
) -> None:
    created = _ask(serve(), api_key())
    page.goto(created["form_url"])
    page.evaluate("() => document.querySelector('input[name=csrf_token]').remove()")
    page.get_by_role("button", name="J'accepte").click()
    expect(_h1(page)).to_have_text("Le formulaire a expiré")
    shot(page, "25-error-csrf-fr")
    _unchanged(database)

    page.goto(created["form_url"])
    page.context.clear_cookies()
    page.get_by_role("button", name="J'accepte").click()
    expect(_h1(page)).to_have_text("Le formulaire a expiré")
    _unchanged(database)
