"""Bearer API keys and scopes for the partner API."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request
from sqlalchemy.orm import Session

from consent_service.api.context import state
from consent_service.api.problems import problem
from consent_service.services.clients import authenticate

F = TypeVar("F", bound=Callable[..., Any])
MAX_KEY_LENGTH = 256


def requires(scope: str) -> Callable[[F], F]:
    """Let the view run only for a valid key that carries ``scope``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or len(token) > MAX_KEY_LENGTH:
                return _unauthorized("Send `Authorization: Bearer <api key>`.")
            with Session(state().database.engine) as session:
                caller = authenticate(session, api_key=token)
            if caller is None:
                return _unauthorized("The API key is unknown, revoked or malformed.")
            g.principal = caller
            if scope not in caller.scopes:
                return problem(403, "Forbidden", f"This key lacks the `{scope}` scope.")
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def _unauthorized(detail: str) -> Any:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="consent-service"'
    return response
