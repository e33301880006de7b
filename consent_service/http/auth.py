"""Bearer API keys or access tokens, scopes and per-client rate limits for the partner API.

A bearer that has the shape of a JWT, when ``CONSENT_OIDC_ISSUER`` is set,
is checked as an OpenID Connect access token (``identity.tokens``); a
refused token is answered 401 with ``WWW-Authenticate: Bearer
error="invalid_token"``. Any other bearer is an API key.

Every request checks its key, against the worker's cache of keys verified
less than ``CONSENT_API_KEY_CACHE_MS`` ago or else against the database
(``services.key_cache``: a revocation takes effect everywhere within that
time), then its scope, then its client's budget on this route. Each refusal
is remembered in ``g`` for the audit trail.

Refused keys (missing, malformed, unknown, revoked, expired) count against
their client address's ``auth-failures`` budget: past it, the address gets
429 with ``Retry-After`` instead of 401, and the audit log sums these
refusals up (``api.refusals``) instead of one entry each. A valid key is
never refused for what other keys from its address did.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request

from consent_service import audit
from consent_service.http.context import read_connection, state
from consent_service.http.problems import problem
from consent_service.identity.jwks import SigningKeys
from consent_service.identity.tokens import MAX_TOKEN_LENGTH, check_token, looks_like_jwt
from consent_service.ratelimits import RATE_LIMITS_EXTENSION, RateLimits
from consent_service.services.clients import AuthResult, check_key
from consent_service.services.key_cache import VerifiedKeys
from consent_service.timefmt import utcnow

F = TypeVar("F", bound=Callable[..., Any])
MAX_KEY_LENGTH = 256
KEY_CACHE_EXTENSION = "consent_service.verified_keys"
SIGNING_KEYS_EXTENSION = "consent_service.oidc_signing_keys"
AUTH_FAILURES = "auth-failures"
# Which check failed is recorded in the audit log, not told to the caller.
JWT_REFUSED = (
    "The access token is expired, not yet valid, for another audience or issuer, "
    "signed with an unknown key or algorithm, or lacks a claim."
)


def requires(scope: str, cost: Callable[[], int] | None = None) -> Callable[[F], F]:
    """Let the view run only for a valid key that carries ``scope`` and has budget left.

    ``cost``: how many requests this one counts for against the budget
    (a batch of N questions counts N); one when not given.
    """

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
                g.auth_result = AuthResult(None, "missing")
                return _refused_key("Send `Authorization: Bearer <api key or access token>`.")
            # The key check and the view share one read-only connection,
            # opened on first use (``context.read_connection``) and closed
            # here, whatever the view raised.
            with ExitStack() as read_scope:
                g.read_scope = read_scope
                try:
                    refusal = _authorize(token, scope, cost() if cost else 1)
                    if refusal is not None:
                        return refusal
                    return view(*args, **kwargs)
                finally:
                    g.pop("read_connection", None)
                    del g.read_scope

        # The OpenAPI document states each operation's scope from this (api.apidoc).
        guarded.required_scope = scope  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def _authorize(token: str, scope: str, cost: int) -> Any:
    """None when the bearer is valid, carries ``scope`` and has budget left; else the refusal."""
    oidc = state().settings.oidc
    is_jwt = oidc is not None and looks_like_jwt(token)
    if oidc is not None and is_jwt:
        checked = check_token(token, oidc, signing_keys())
        result = AuthResult(checked.principal, checked.failure)
    elif len(token) > MAX_KEY_LENGTH:
        result = AuthResult(None, "malformed")
    else:
        result = _check(token)
    g.auth_result = result
    caller = result.principal
    if caller is None and is_jwt:
        return _refused_key(JWT_REFUSED, invalid_token=True)
    if caller is None:
        return _refused_key("The API key is unknown, expired, revoked or malformed.")
    g.principal = caller
    context = audit.current_context.get() or audit.Context()
    audit.current_context.set(
        replace(context, client_id=caller.client_id, organization=caller.organization)
    )
    if scope not in caller.scopes:
        held_by = "token" if caller.token_subject is not None else "key"
        return problem(403, "Forbidden", f"This {held_by} lacks the `{scope}` scope.")
    limited = _over_limit(scope, caller.client_id, request.endpoint or request.path, cost)
    if limited is not None:
        return limited
    return None


def _check(token: str) -> AuthResult:
    """The key's principal from the worker's cache, else from the database (then cached)."""
    now = utcnow()
    keys = verified_keys()
    cached = keys.principal(token, now)
    if cached is not None:
        return AuthResult(cached)
    checked_at = keys.clock()
    result = check_key(
        read_connection(), api_key=token, now=now, peppers=state().settings.api_key_peppers
    )
    if result.principal is not None:
        keys.remember(token, result.principal, expires_at=result.expires_at, checked_at=checked_at)
    return result


def verified_keys() -> VerifiedKeys:
    """This app's cache of verified keys in this process (made on first use)."""
    found: VerifiedKeys | None = current_app.extensions.get(KEY_CACHE_EXTENSION)
    if found is None:
        found = VerifiedKeys(state().settings.api_key_cache_ms)
        current_app.extensions[KEY_CACHE_EXTENSION] = found
    return found


def signing_keys() -> SigningKeys:
    """This app's copy of the issuer's signing keys in this process (made on first use)."""
    found: SigningKeys | None = current_app.extensions.get(SIGNING_KEYS_EXTENSION)
    if found is None:
        oidc = state().settings.oidc
        assert oidc is not None, "only called when OpenID Connect is configured"
        found = SigningKeys(
            issuer=oidc.issuer, jwks_url=oidc.jwks_url, max_age=oidc.jwks_max_age_seconds
        )
        current_app.extensions[SIGNING_KEYS_EXTENSION] = found
    return found


def _over_limit(scope: str, who: str, route: str, cost: int = 1) -> Any:
    limits: RateLimits | None = current_app.extensions.get(RATE_LIMITS_EXTENSION)
    if limits is None:
        return None
    verdict = limits.hit(scope, who, route, cost)
    if verdict.allowed:
        return None
    asked = f" (this one counts for {cost})" if cost > 1 else ""
    response = problem(
        429,
        "Too Many Requests",
        f"Over {verdict.limit} requests for this route in the current window{asked}; "
        f"retry in {verdict.retry_after} s.",
    )
    response.headers["Retry-After"] = str(verdict.retry_after)
    return response


def _refused_key(detail: str, *, invalid_token: bool = False) -> Any:
    """401, or 429 once this client address has had too many keys or tokens refused."""
    throttled = _over_limit(AUTH_FAILURES, request.remote_addr or "unknown", AUTH_FAILURES)
    return throttled if throttled is not None else _unauthorized(detail, invalid_token)


def _unauthorized(detail: str, invalid_token: bool) -> Any:
    response = problem(401, "Unauthorized", detail)
    challenge = 'Bearer realm="consent-service"'
    if invalid_token:
        # RFC 6750 section 3: the token was presented and refused.
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response
