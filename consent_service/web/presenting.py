"""What the patient pages show of a request, a consent or an emergency access, in their words.

Plain functions of the page's language and the service's answers: no request
context, so the views stay about routing, checks and answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from consent_service import wording
from consent_service.db.request_models import ConsentRequest
from consent_service.web import i18n

Names = dict[str, tuple[str, str | None]]


def duration(lang: str, consent_request: ConsentRequest) -> str:
    """How long the consent asked for would last."""
    t = i18n.translator(lang)
    if consent_request.valid_for_days is not None:
        return t("for_days", days=str(consent_request.valid_for_days))
    if consent_request.valid_until is not None:
        return t("until_date", date=wording.format_date(lang, consent_request.valid_until))
    return t("no_end")


def words(
    lang: str, lookup: Callable[[str, str], tuple[str, str | None]], codes: Sequence[str]
) -> list[tuple[str, str | None]]:
    return [lookup(lang, code) for code in codes]


def consent_view(lang: str, consent: dict[str, Any], names: Names) -> dict[str, Any]:
    """What the "my consents" page shows of one consent."""
    t = i18n.translator(lang)
    name, profession = names.get(consent["practitioner_id"], (consent["practitioner_id"], None))
    start = wording.format_date(lang, _instant(consent["valid_from"]))
    if consent["valid_until"]:
        end = wording.format_date(lang, _instant(consent["valid_until"]))
        period = t("period_bounded", start=start, end=end)
    else:
        period = t("period_open", start=start)
    return {
        "id": consent["id"],
        "practitioner": name,
        "profession": profession,
        "categories": words(lang, wording.category_words, consent["categories"]),
        "purposes": words(lang, wording.purpose_words, consent["purposes"]),
        "period": period,
        "status": consent["status"],
        "is_refusal": consent["decision"] == "deny",
        "can_withdraw": consent["status"] == "active" and consent["decision"] == "permit",
    }


def emergency_view(lang: str, access: dict[str, Any], names: Names) -> dict[str, Any]:
    """What the "my consents" page shows of one emergency access: who, when, why, how long."""
    name, profession = names.get(access["practitioner_id"], (access["practitioner_id"], None))
    until = access["closed_at"] or access["expires_at"]
    return {
        "id": access["id"],
        "practitioner": name,
        "profession": profession,
        "opened": wording.format_moment(lang, _instant(access["opened_at"])),
        "until": wording.format_moment(lang, _instant(until)),
        "justification": access["justification"],
        "status": access["status"],
    }


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
