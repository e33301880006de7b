"""Signed links to the patient form, one salt per purpose.

A link carries only the request id, signed with itsdangerous and stamped
with its time. ``CONSENT_SECRET_KEYS`` lists keys newest first: the newest
signs, every listed key verifies, so a key can be rotated while links signed
with the previous one are still in people's inboxes, and removed once they
have lapsed. A link to answer a request and a link to manage one's consents
use different salts: neither can be passed off as the other.

Only signing and verifying live here (no Flask): the API builds the absolute
URLs around these tokens (``api.requests``), the form verifies them.

The token travels in the query string (``?t=``) and in form bodies, never in
the path: the access log records paths only (gunicorn ``%(U)s``), and every
page is served with ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import urlencode

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from consent_service.services.requests import MAX_EXPIRES_IN

ANSWER = "answer-request"
MANAGE = "manage-consents"
# Proof, carried by the answer form, that the request's code was typed correctly.
CODE_CHECKED = "code-checked"
PURPOSES = (ANSWER, MANAGE, CODE_CHECKED)
# A link to answer lives no longer than the longest request it may name (the
# request's own deadline is checked against the database); a link to manage
# one's consents can be fetched anew from GET /v1/consent-requests/{id}.
MAX_AGE = {ANSWER: MAX_EXPIRES_IN, MANAGE: timedelta(days=90), CODE_CHECKED: timedelta(hours=1)}
MAX_TOKEN_LENGTH = 512
# Where the form serves each purpose (``web.views``); used to build links
# outside a request, as the mailer does, on ``CONSENT_PUBLIC_URL``.
PATHS = {ANSWER: "/consent/request", MANAGE: "/consent/mine"}


class LinkError(Exception):
    """A link that cannot be honoured; ``kind`` names the page the patient sees."""

    kind = "tampered"


class TamperedLink(LinkError):
    """Bad signature, wrong purpose, malformed or truncated."""


class ExpiredLink(LinkError):
    """A genuine link, older than its purpose allows."""

    kind = "expired"


def _serializer(keys: Sequence[str], purpose: str) -> URLSafeTimedSerializer:
    # itsdangerous wants keys oldest to newest and signs with the last one.
    return URLSafeTimedSerializer(list(reversed(keys)), salt=f"consent-service/{purpose}/v1")


def sign(keys: Sequence[str], purpose: str, request_id: str) -> str:
    """A token naming ``request_id`` for ``purpose``, signed with the newest key."""
    return _serializer(keys, purpose).dumps({"r": request_id})


def public_link(
    public_url: str, keys: Sequence[str], purpose: str, request_id: str, language: str
) -> str:
    """The absolute, freshly signed link for ``purpose``, as the API's answers carry it."""
    query = urlencode({"t": sign(keys, purpose, request_id), "lang": language})
    return f"{public_url}{PATHS[purpose]}?{query}"


def verify(keys: Sequence[str], purpose: str, token: str | None) -> str:
    """The request id a token names, if any listed key signed it for ``purpose``."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TamperedLink
    max_age = int(MAX_AGE[purpose].total_seconds())
    try:
        payload = _serializer(keys, purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise ExpiredLink from None
    except BadData:
        raise TamperedLink from None
    request_id = payload.get("r") if isinstance(payload, dict) else None
    try:
        return str(uuid.UUID(str(request_id)))
    except ValueError:
        raise TamperedLink from None
