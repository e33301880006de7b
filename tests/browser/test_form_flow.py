"""The patient's journey in a real browser: grant, refuse, withdraw, replay, language."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Serve, api, shot
from tests.conftest import KeyFactory
from tests.web.conftest import request_body

pytestmark = pytest.mark.slow


def _ask(base: str, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    status, created = api(base, "POST", "/v1/consent-requests", auth, request_body(**overrides))
    assert status == 201, created
    return created


def _events(base: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    status, page = api(base, "GET", "/v1/events", auth)
    assert status == 200
    items: list[dict[str, Any]] = page["items"]
    return items


def test_grant_then_withdraw_from_my_consents(
    page: Page, serve: Serve, api_key: KeyFactory, backend: str
) -> None:
    base, auth = serve(), api_key()
    created = _ask(base, auth)

    page.goto(created["form_url"])
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", level=1)).to_have_text("Demande de consentement")
    for text in ("Cabinet dentaire du Parc", "Dr Camille Martin", "Votre schéma dentaire",
                 "Coordonner vos soins", "Pendant 365 jours", "Version 2026-01"):  # fmt: skip
        expect(page.get_by_text(text, exact=False).first).to_be_visible()
    shot(page, f"01-form-fr-{backend}")

    page.get_by_role("button", name="J'accepte").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci, votre accord est enregistré")
    shot(page, f"02-granted-fr-{backend}")

    status, answered = api(base, "GET", f"/v1/consent-requests/{created['id']}", auth)
    assert status == 200 and answered["status"] == "granted"
    status, consent = api(base, "GET", f"/v1/consents/{answered['consent_id']}", auth)
    assert status == 200, consent
    assert consent["collection"]["method"] == "web-form" and consent["actor"] == "patient"
    assert [event["type"] for event in _events(base, auth)] == ["consent.granted"]

    page.get_by_role("link", name="Voir ou retirer mes consentements").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes consentements")
    expect(page.get_by_text("En vigueur")).to_be_visible()
    shot(page, f"03-my-consents-fr-{backend}")

    page.get_by_role("button", name="Retirer ce consentement").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre consentement est retiré")
    shot(page, f"04-withdrawn-fr-{backend}")
    status, consent = api(base, "GET", f"/v1/consents/{answered['consent_id']}", auth)
    assert status == 200, consent
    assert consent["status"] == "revoked" and consent["version"] == 2
    assert consent["actor"] == "patient"
    events = _events(base, auth)
    assert [event["type"] for event in events] == ["consent.granted", "consent.revoked"]
    assert events[-1]["data"]["actor"] == "patient"

    page.get_by_role("link", name="Retour à mes consentements").click()
    expect(page.get_by_text("Retiré", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Retirer ce consentement")).to_have_count(0)
    shot(page, f"05-my-consents-after-withdrawal-{backend}")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_refusal_records_no_consent(page: Page, serve: Serve, api_key: KeyFactory) -> None:
    base, auth = serve(), api_key()
    created = _ask(base, auth)
    page.goto(created["form_url"])
    page.get_by_role("button", name="Je refuse").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre refus est enregistré")
    shot(page, "06-refused-fr")
    status, answered = api(base, "GET", f"/v1/consent-requests/{created['id']}", auth)
    assert status == 200, answered
    assert answered["status"] == "refused" and answered["consent_id"] is None
    assert _events(base, auth) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_second_submission_and_reopening_say_already_answered(
    page: Page, serve: Serve, api_key: KeyFactory
) -> None:
    base, auth = serve(), api_key()
    created = _ask(base, auth)
    page.goto(created["form_url"])
    second_tab = page.context.new_page()
    second_tab.goto(created["form_url"])

    page.get_by_role("button", name="J'accepte").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci, votre accord est enregistré")
    second_tab.get_by_role("button", name="Je refuse").click()
    expect(second_tab.get_by_role("heading", level=1)).to_have_text("Vous avez déjà répondu")
    shot(second_tab, "07-already-answered-fr")

    page.go_back()
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Vous avez déjà répondu")
    expect(page.get_by_role("link", name="Voir ou retirer mes consentements")).to_be_visible()
    status, answered = api(base, "GET", f"/v1/consent-requests/{created['id']}", auth)
    assert status == 200, answered
    assert answered["status"] == "granted"
    assert [event["type"] for event in _events(base, auth)] == ["consent.granted"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_french_by_default_and_english_on_request(
    page: Page, serve: Serve, api_key: KeyFactory
) -> None:
    base, auth = serve(), api_key()
    page.goto(_ask(base, auth)["form_url"])
    expect(page.get_by_role("button", name="J'accepte")).to_be_visible()
    page.get_by_role("link", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text("Consent request")
    expect(page.get_by_text("Consent to share health data")).to_be_visible()
    expect(page.get_by_text("Your dental chart", exact=False)).to_be_visible()
    shot(page, "08-form-en")

    english = _ask(base, auth, language="en")
    page.goto(english["form_url"])
    expect(page.get_by_role("button", name="I agree")).to_be_visible()
    page.get_by_role("button", name="I agree").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Thank you, your agreement is recorded"
    )
    shot(page, "09-granted-en")
    page.get_by_role("link", name="See or withdraw my consents").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("My consents")
    shot(page, "10-my-consents-en")
    status, answered = api(base, "GET", f"/v1/consent-requests/{english['id']}", auth)
    assert status == 200, answered
    assert answered["policy_version"] == "2026-01/en"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_keyboard_only(page: Page, serve: Serve, api_key: KeyFactory) -> None:
    base, auth = serve(), api_key()
    created = _ask(base, auth)
    page.goto(created["form_url"])

    stops = []
    for _ in range(4):
        page.keyboard.press("Tab")
        stops.append(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return `${e.tagName.toLowerCase()}:${e.textContent.trim()}`; }"
            )
        )
    # Skip link first, then the language, then the two answers, and nothing else.
    assert stops == ["a:Aller au contenu", "a:English", "button:J'accepte", "button:Je refuse"]
    outline = page.evaluate(
        "() => getComputedStyle(document.querySelector('button.refuse:focus-visible') "
        "|| document.body).outlineStyle"
    )
    shot(page, "11-keyboard-focus-on-refuse")
    assert outline == "solid"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci, votre accord est enregistré")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Mes consentements")
