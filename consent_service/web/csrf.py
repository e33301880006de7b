"""CSRF protection of the form posts: a signed double-submit token.

The browser holds a random value in an ``HttpOnly``, ``Secure``,
``SameSite=Strict`` cookie; each form carries that value signed with the
service's keys. A post is honoured only when the signed field verifies and
matches the cookie: another site can make a browser send the cookie, but
cannot read the page to learn the field, nor forge a field for a cookie it
planted. Signing with ``CONSENT_SECRET_KEYS`` (salted apart from the links)
means the check needs no server-side session.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence

from flask import Response, g, request
from itsdangerous import BadData, URLSafeTimedSerializer

COOKIE_NAME = "consent_csrf"
FIELD_NAME = "csrf_token"
# Long enough to read the consent text at leisure, short enough that a
# copied page stops working the same day.
MAX_AGE_SECONDS = 12 * 3600
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def _serializer(keys: Sequence[str]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(reversed(keys)), salt="consent-service/csrf/v1")


def csrf_token(keys: Sequence[str]) -> str:
    """The field value for forms on this page; sets the cookie if the browser has none."""
    value = g.get("csrf_cookie")
    if value is None:
        existing = request.cookies.get(COOKIE_NAME, "")
        value = existing if _COOKIE_VALUE.match(existing) else secrets.token_urlsafe(32)
        g.csrf_cookie = value
        g.csrf_cookie_is_new = value != existing
    return str(_serializer(keys).dumps(value))


def csrf_is_valid(keys: Sequence[str]) -> bool:
    """Whether this POST carries a field that matches the browser's cookie."""
    cookie = request.cookies.get(COOKIE_NAME, "")
    field = request.form.get(FIELD_NAME, "")
    if not _COOKIE_VALUE.match(cookie) or not field or len(field) > 256:
        return False
    try:
        signed = _serializer(keys).loads(field, max_age=MAX_AGE_SECONDS)
    except BadData:
        return False
    return isinstance(signed, str) and hmac.compare_digest(signed, cookie)


def set_csrf_cookie(response: Response) -> None:
    """Send the cookie chosen while rendering this page, if it is new."""
    if g.get("csrf_cookie_is_new"):
        response.set_cookie(
            COOKIE_NAME,
            g.csrf_cookie,
            path="/consent",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
