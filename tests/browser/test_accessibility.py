"""axe-core on every page state, on a phone and on a desktop screen."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser.conftest import Serve, api, axe_violations, shot
from tests.conftest import KeyFactory
from tests.web.conftest import request_body

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]


@pytest.mark.parametrize(
    ("viewport", "label"),
    [({"width": 375, "height": 740}, "phone"), ({"width": 1280, "height": 900}, "desktop")],
)
def test_no_serious_or_critical_violations(
    browser: Browser, serve: Serve, api_key: KeyFactory, viewport: ViewportSize, label: str
) -> None:
    base, auth = serve(), api_key()
    context = browser.new_context(viewport=viewport, locale="fr-FR")
    page: Page = context.new_page()
    found: dict[str, object] = {}

    def scan(state: str) -> None:
        found[state] = axe_violations(page)
        shot(page, f"30-axe-{label}-{state}")

    try:
        status, coded = api(
            base, "POST", "/v1/consent-requests", auth, request_body(verification="code")
        )
        assert status == 201, coded
        page.goto(coded["form_url"])
        scan("code-fr")
        body = request_body()
        status, french = api(base, "POST", "/v1/consent-requests", auth, body)
        assert status == 201, french
        emergency = {
            "patient_id": body["patient_id"],
            "practitioner_id": body["practitioner_id"],
            "justification": "Patient unconscious in the emergency room at night.",
        }
        status, opened = api(base, "POST", "/v1/emergency-access", auth, emergency)
        assert status == 201, opened
        page.goto(french["form_url"])
        scan("form-fr")
        page.get_by_role("link", name="English").click()
        scan("form-en")
        page.get_by_role("button", name="I agree").click()
        scan("granted-en")
        page.get_by_role("link", name="See or withdraw my consents").click()
        expect(page.get_by_text(emergency["justification"])).to_be_visible()
        scan("my-consents-en")
        page.get_by_role("button", name="Withdraw this consent").click()
        scan("withdrawn-en")
        page.goto(french["form_url"])
        expect(page.get_by_role("heading", level=1)).to_have_text("Vous avez déjà répondu")
        scan("error-answered-fr")
        page.goto(base + "/consent/request?t=broken")
        scan("error-tampered-fr")
    finally:
        context.close()
    assert all(not violations for violations in found.values()), found
