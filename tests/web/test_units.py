"""Pure pieces of the web form: catalogues and evidence size."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

from consent_service import wording
from consent_service.db.request_models import PolicyText
from consent_service.services.requests import evidence_ref
from consent_service.web import i18n

TEMPLATES = Path(i18n.__file__).parent / "templates"
ERROR_KINDS = ("tampered", "expired", "answered", "answered_late", "not_active", "unknown",
               "csrf", "bad_form", "rate", "server")  # fmt: skip


def test_both_languages_have_every_message_and_word() -> None:
    assert set(i18n.MESSAGES["fr"]) == set(i18n.MESSAGES["en"])
    assert set(wording.CATEGORIES["fr"]) == set(wording.CATEGORIES["en"])
    assert set(wording.PURPOSES["fr"]) == set(wording.PURPOSES["en"])
    for kind in ERROR_KINDS:
        for part in ("title", "body", "next"):
            assert f"error_{kind}_{part}" in i18n.MESSAGES["fr"]


def test_every_message_key_used_by_a_template_exists() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r't\("([a-z_]+)"[,)]', template.read_text()))
    assert used and used <= set(i18n.MESSAGES["fr"])


def test_dates_in_paris_time_and_plain_words() -> None:
    late_evening_utc = datetime(2027, 3, 11, 23, 30, tzinfo=UTC)
    assert wording.format_date("fr", late_evening_utc) == "12 mars 2027"
    assert wording.format_date("en", late_evening_utc) == "12 March 2027"
    assert wording.format_moment("fr", late_evening_utc) == "12 mars 2027 à 0 h 30"
    assert wording.category_words("en", "radiographs")[0] == "Your X-rays"
    assert wording.purpose_words("fr", "custom-purpose") == ("custom-purpose", None)


def test_evidence_fits_its_column_at_the_longest() -> None:
    text = PolicyText(version="v" * 32, language="fr", sha256="f" * 64)
    reference = evidence_ref(str(uuid.uuid4()), datetime.now(UTC), text, code_checked=True)
    assert len(reference) <= 256
    assert "192.168" not in reference and "Mozilla" not in reference
