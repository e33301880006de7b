"""The two messages a patient may receive: the invitation and the confirmation.

Both are in the request's language, with a plain-text and an HTML part (the
same words; no image, no remote resource, no tracking). The invitation names
the practice and the practitioner and carries the link and its deadline, but
says nothing of the health data asked: categories and purposes stay behind
the link, where only the patient reads them. The confirmation, sent after
the answer, repeats what was agreed or refused, the version of the consent
text, and the link to see and withdraw consents.

Every header value here is either fixed text or a one-line value validated
at the API; the email package's policy also refuses CR/LF in any header, so
a value cannot add a header of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html import escape

from consent_service.mail.texts import TEXTS
from consent_service.wording import category_words, format_moment, purpose_words


@dataclass(frozen=True)
class Letterhead:
    """Who writes: the sender address, and the names the patient knows."""

    mail_from: str
    practice: str
    practitioner: str
    profession: str | None


def invitation(
    head: Letterhead, to: str, language: str, form_url: str, expires_at: datetime
) -> EmailMessage:
    """The message carrying the link to the consent form."""
    words = TEXTS[language]
    paragraphs = [
        words["greeting"],
        words["invitation"].format(practice=head.practice, practitioner=_who(head, language)),
        words["invitation_how"],
        words["deadline"].format(deadline=format_moment(language, expires_at)),
        words["invitation_ignore"],
    ]
    return _message(
        head, to, language, words["invitation_subject"].format(practice=head.practice),
        paragraphs, link=(words["open_form"], form_url),
    )  # fmt: skip


def confirmation(
    head: Letterhead,
    to: str,
    language: str,
    *,
    granted: bool,
    categories: list[str],
    purposes: list[str],
    text_version: str | None,
    manage_url: str,
    manage_expires_at: datetime,
) -> EmailMessage:
    """The message telling the patient what their answer recorded."""
    words = TEXTS[language]
    outcome = words["granted" if granted else "refused"].format(practitioner=_who(head, language))
    data = ", ".join(category_words(language, c)[0] for c in categories)
    why = ", ".join(purpose_words(language, p)[0] for p in purposes)
    paragraphs = [
        words["greeting"],
        outcome,
        words["what"].format(data=data, purposes=why),
        words["text_version"].format(version=text_version or "-"),
        words["manage"].format(deadline=format_moment(language, manage_expires_at)),
    ]
    return _message(
        head, to, language, words["confirmation_subject"].format(practice=head.practice),
        paragraphs, link=(words["open_manage"], manage_url),
    )  # fmt: skip


def _who(head: Letterhead, language: str) -> str:
    if head.profession:
        return TEXTS[language]["practitioner_with_profession"].format(
            name=head.practitioner, profession=head.profession
        )
    return head.practitioner


def _message(
    head: Letterhead,
    to: str,
    language: str,
    subject: str,
    paragraphs: list[str],
    link: tuple[str, str],
) -> EmailMessage:
    label, url = link
    message = EmailMessage()
    message["From"] = head.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now().astimezone())
    message["Message-ID"] = make_msgid(domain=head.mail_from.rpartition("@")[2] or None)
    # An automatic message: no out-of-office replies (RFC 3834).
    message["Auto-Submitted"] = "auto-generated"
    closing = TEXTS[language]["closing"].format(practice=head.practice)
    text = [*paragraphs[:-1], f"{label}\n{url}", paragraphs[-1], closing]
    message.set_content("\n\n".join(text))
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs[:-1])
    body += f'<p><a href="{escape(url, quote=True)}">{escape(label)}</a></p>'
    body += f"<p>{escape(paragraphs[-1])}</p><p>{escape(closing)}</p>"
    message.add_alternative(
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8">'
        f"<title>{escape(subject)}</title></head><body>{body}</body></html>",
        subtype="html",
    )
    # After the parts: setting the content replaces every Content-* header.
    message["Content-Language"] = language
    return message
