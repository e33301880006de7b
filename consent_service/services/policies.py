"""Versioned consent texts, one immutable row per (version, language).

The patient reads the newest text of their language; the consent pins the
version, the language and the SHA-256 of exactly that text, so what was
agreed to can be shown again years later. Texts are never edited: a change
is a new version.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consent_service.db.request_models import PolicyText
from consent_service.services.errors import Conflict, InvalidConsent, NotFound
from consent_service.services.requests import LANGUAGES

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
MAX_TITLE = 200
MAX_BODY = 20_000


def text_digest(title: str, body: str) -> str:
    """The SHA-256 (hex) of a text as shown: title, blank line, body."""
    return hashlib.sha256(f"{title}\n\n{body}".encode()).hexdigest()


def add_policy_text(
    session: Session, *, version: str, language: str, title: str, body: str, now: datetime
) -> PolicyText:
    """Publish a new version of the consent text in one language."""
    title, body = title.strip(), body.strip().replace("\r\n", "\n")
    errors: dict[str, list[str]] = {}
    if not VERSION.match(version):
        errors["version"] = ["1-32 characters: letters, digits, '.', '_' or '-'."]
    if language not in LANGUAGES:
        errors["language"] = [f"One of: {', '.join(LANGUAGES)}."]
    if not title or len(title) > MAX_TITLE or "\n" in title or not _printable(title):
        errors["title"] = [f"One line of 1-{MAX_TITLE} printable characters."]
    if not body or len(body) > MAX_BODY or not _printable(body):
        errors["body"] = [f"1-{MAX_BODY} printable characters."]
    if errors:
        raise InvalidConsent(errors)
    text = PolicyText(
        version=version,
        language=language,
        title=title,
        body=body,
        sha256=text_digest(title, body),
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(text)
    except IntegrityError:
        raise Conflict(f"Version {version} already exists in {language}.") from None
    return text


def current_policy_text(session: Session, *, language: str) -> PolicyText:
    """The newest text of a language: the one a patient answering now reads."""
    text = session.scalar(
        select(PolicyText)
        .where(PolicyText.language == language)
        .order_by(PolicyText.created_at.desc(), PolicyText.id.desc())
        .limit(1)
    )
    if text is None:
        raise NotFound(f"No consent text in {language}; add one with `consent-service policies`.")
    return text


def get_policy_text(session: Session, *, version: str, language: str) -> PolicyText:
    """One published text, e.g. the one a form was rendered with."""
    text = session.scalar(
        select(PolicyText).where(PolicyText.version == version, PolicyText.language == language)
    )
    if text is None:
        raise NotFound(f"No consent text {version} in {language}.")
    return text


def list_policy_texts(session: Session) -> list[PolicyText]:
    """Every text, oldest first."""
    return list(session.scalars(select(PolicyText).order_by(PolicyText.created_at, PolicyText.id)))


def _printable(value: str) -> bool:
    return all(
        unicodedata.category(char) not in ("Cc", "Cs", "Co", "Cn") or char == "\n" for char in value
    )
