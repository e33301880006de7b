"""The messages: language, parts, headers, what they say and what they never say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consent_service.mail.compose import Letterhead, confirmation, invitation

HEAD = Letterhead(
    "Cabinet Dentaire <cabinet@example.org>", "Cabinet du Parc", "Dr Martin", "chirurgien-dentiste"
)
LINK = "https://consent.example/consent/answer?t=abc"
WHEN = datetime(2026, 12, 12, 13, 30, tzinfo=UTC)


@pytest.mark.parametrize(("language", "word"), [("fr", "consentement"), ("en", "consent")])
def test_the_invitation_names_the_practice_and_carries_the_link_and_deadline(
    language: str, word: str
) -> None:
    message = invitation(HEAD, "patient@example.org", language, LINK, WHEN)
    assert word in message["Subject"] and "Cabinet du Parc" in message["Subject"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@example.org>")
    assert message["Date"]
    assert message["Content-Language"] == language
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Dr Martin" in part and "chirurgien-dentiste" in part
        assert "12" in part and ("14 h 30" in part or "14:30" in part)  # Paris time
    assert LINK in text and f'href="{LINK}"' in html
    assert "<img" not in html and "src=" not in html  # nothing fetched, nothing tracked


def test_the_invitation_says_nothing_of_the_data_asked() -> None:
    message = invitation(HEAD, "p@example.org", "fr", LINK, WHEN)
    whole = message.as_string().lower()
    for health_word in ("radio", "dentaire schéma", "ordonnance", "antécédents", "x-ray"):
        assert health_word not in whole


def test_the_confirmation_repeats_the_answer_version_and_manage_link() -> None:
    message = confirmation(
        HEAD,
        "p@example.org",
        "en",
        granted=False,
        categories=["radiographs"],
        purposes=["referral"],
        text_version="2026-01",
        manage_url=LINK + "m",
        manage_expires_at=WHEN,
    )
    text = message.get_body(("plain",)).get_content()
    assert "refused" in text and "X-rays" in text and "2026-01" in text and LINK + "m" in text


def test_header_injection_through_names_is_impossible() -> None:
    hostile = Letterhead("cabinet@example.org", "Parc\r\nBcc: thief@example.org", "Dr X", None)
    with pytest.raises(ValueError):
        invitation(hostile, "p@example.org", "fr", LINK, WHEN)
    with pytest.raises(ValueError):
        invitation(HEAD, "p@example.org\r\nBcc: thief@example.org", "fr", LINK, WHEN)


def test_html_escapes_names() -> None:
    head = Letterhead("cabinet@example.org", "<script>alert(1)</script>", "Dr <b>", None)
    html = invitation(head, "p@example.org", "fr", LINK, WHEN).get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
