"""What the "my consents" page says about a withdrawal reaching the practice's software.

A withdrawal protects the patient once every system that shares their data
has applied it; the practice's software acknowledges that (enforcement
receipts), and the page tells the patient when, or that it is still pending.
Nothing is said when the practice has no software acknowledging changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from consent_service import wording
from consent_service.services.receipts import withdrawal_receipts
from consent_service.web import i18n


def withdrawal_texts(
    session: Session, *, organization: str, consents: Sequence[dict[str, Any]], language: str
) -> dict[str, str]:
    """One sentence per withdrawn consent, by consent id."""
    withdrawn = [consent["id"] for consent in consents if consent["status"] == "revoked"]
    receipts = withdrawal_receipts(session, organization=organization, consent_ids=withdrawn)
    t = i18n.translator(language)
    texts = {}
    for consent_id, receipt in receipts.items():
        if receipt.total == 0:
            continue
        if receipt.applied_at is not None:
            texts[consent_id] = t(
                "receipt_done" if receipt.applied > 1 else "receipt_done_one",
                applied=receipt.applied,
                total=receipt.total,
                moment=wording.format_moment(language, receipt.applied_at),
            )
        else:
            texts[consent_id] = t("receipt_pending", applied=receipt.applied, total=receipt.total)
    return texts
