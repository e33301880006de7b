"""Bearer API keys, scopes and per-client rate limits for the partner API.

Every request checks its key against the database (revoking a key stops it
on the next request), then its scope, then its client's budget on this
route. Each refusal is remembered in ``g`` for the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy import Connection

from consent_service.api.context import state
from consent_service.api.problems import problem
from consent_service.ratelimits import RATE_LIMITS_EXTENSION, RateLimits
from consent_service.services import audit
from consent_service.services.clients import AuthResult, check_key
from consent_service.timefmt import utcnow

F = TypeVar("F", bound=Callable[..., Any])
MAX_KEY_LENGTH = 256


def requires(scope: str) -> Callable[[F], F]:
    """Let the view run only for a valid key that carries ``scope`` and has budget left."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LENGTH:
                g.auth_result = AuthResult(None, "missing")
                return _unauthorized("Send `Authorization: Bearer <api key>`.")
            # The view may read on the same connection (``context.read_connection``):
            # a decision then costs one pool checkout (and on PostgreSQL one
            # pre-ping round trip), not two.
            with state().database.read_only() as connection:
                refusal = _authorize(connection, token, scope)
                if refusal is not None:
                    return refusal
                g.read_connection = connection
                try:
                    return view(*args, **kwargs)
                finally:
                    del g.read_connection

        # The OpenAPI document states each operation's scope from this (api.apidoc).
        guarded.required_scope = scope  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def _authorize(connection: Connection, token: str, scope: str) -> Any:
    """None when the key is valid, carries ``scope`` and has budget left; else the refusal."""
    result = check_key(
        connection,
        api_key=token,
        now=utcnow(),
        peppers=state().settings.api_key_peppers,
    )
    g.auth_result = result
    caller = result.principal
    if caller is None:
        return _unauthorized("The API key is unknown, expired, revoked or malformed.")
    g.principal = caller
    context = audit.current_context.get() or audit.Context()
    audit.current_context.set(
        replace(context, client_id=caller.client_id, organization=caller.organization)
    )
    if scope not in caller.scopes:
        return problem(403, "Forbidden", f"This key lacks the `{scope}` scope.")
    limited = _over_limit(scope, caller.client_id)
    if limited is not None:
        return limited
    return None


def _over_limit(scope: str, client_id: str) -> Any:
    limits: RateLimits | None = current_app.extensions.get(RATE_LIMITS_EXTENSION)
    if limits is None:
        return None
    verdict = limits.hit(scope, client_id, request.endpoint or request.path)
    if verdict.allowed:
        return None
    response = problem(
        429,
        "Too Many Requests",
        f"Over {verdict.limit} requests for this route in the current window; "
        f"retry in {verdict.retry_after} s.",
    )
    response.headers["Retry-After"] = str(verdict.retry_after)
    return response


def _unauthorized(detail: str) -> Any:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="consent-service"'
    return response
