"""OpenID Connect access tokens (signed JWTs) as an alternative to API keys.

A token is accepted when, in this order:

1. it is a compact JWS of at most ``MAX_TOKEN_LENGTH`` characters whose
   header names an asymmetric algorithm (RS256, ES256 or PS256: never
   ``none``, never an HMAC, which would let anyone holding the public key
   sign) and a ``kid`` found in the issuer's key set (``identity.jwks``);
2. its signature verifies with that key (joserfc; no hand-written crypto);
3. ``iss`` is the configured issuer, ``aud`` names the configured audience,
   ``exp`` is in the future and ``nbf`` (when present) in the past, both
   with ``CLOCK_SKEW_S`` of tolerance; ``sub`` is present;
4. the organization claim holds an organization id, and the practitioner
   claim, when present, an RPPS number.

Scopes come from the space-separated ``scope`` claim; scopes this service
does not know are ignored. Each refusal names a short reason for the audit
log (``token:expired``, ``token:unknown-key``...), never the token.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwt import JWTClaimsRegistry

from consent_service.config import OidcSettings
from consent_service.identity.jwks import SigningKeys
from consent_service.services.clients import SCOPES, Principal

ALGORITHMS = ("RS256", "ES256", "PS256")
CLOCK_SKEW_S = 60
MAX_TOKEN_LENGTH = 8192
# A version's ``actor`` holds ``token:<sub>`` in 160 characters.
MAX_SUBJECT_LENGTH = 150
ORGANIZATION = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# An RPPS number (11 digits), alone or as a national professional id ("8" then the RPPS
# number), the form of Pro Santé Connect's ``preferred_username``.
PRACTITIONER_NUMBER = re.compile(r"^8?([0-9]{11})$")
# A token's caller id: ``oidc-`` and 31 hex characters, within the 36 of a client id.
CALLER_ID_PREFIX = "oidc-"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The caller a token authenticates, or why it was refused."""

    principal: Principal | None
    failure: str | None = None


def looks_like_jwt(token: str) -> bool:
    """True for a compact JWS shape (three dot-separated parts); API keys have none."""
    return token.count(".") == 2


def check_token(token: str, settings: OidcSettings, keys: SigningKeys) -> TokenCheck:
    """Verify ``token`` against the issuer's keys and the configured claims."""
    if len(token) > MAX_TOKEN_LENGTH:
        return TokenCheck(None, "token:oversized")
    try:
        header = jws.extract_compact(token.encode("ascii")).protected
    except (JoseError, ValueError, TypeError, UnicodeError):
        return TokenCheck(None, "token:malformed")
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        return TokenCheck(None, "token:algorithm")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return TokenCheck(None, "token:no-key-id")
    key = keys.find(kid)
    if key is None:
        return TokenCheck(None, "token:unknown-key")
    try:
        claims = jwt.decode(token, key, algorithms=[algorithm]).claims
        _registry(settings).validate(claims)
    except ExpiredTokenError:
        return TokenCheck(None, "token:expired")
    except BadSignatureError:
        return TokenCheck(None, "token:bad-signature")
    except MissingClaimError:
        return TokenCheck(None, "token:missing-claim")
    except InvalidClaimError as error:
        return TokenCheck(None, f"token:invalid-{_claim_name(error)}")
    except (JoseError, ValueError, TypeError):
        return TokenCheck(None, "token:malformed")
    return _principal(claims, settings)


def _registry(settings: OidcSettings) -> JWTClaimsRegistry:
    registry = JWTClaimsRegistry(
        leeway=CLOCK_SKEW_S,
        iss={"essential": True, "value": settings.issuer},
        aud={"essential": True, "value": settings.audience},
        exp={"essential": True},
        sub={"essential": True},
    )
    registry.options[settings.org_claim] = {"essential": True}
    return registry


def _claim_name(error: InvalidClaimError) -> str:
    # Only the registered claims are named: a configured claim's name is not an audit word.
    return error.claim if error.claim in ("iss", "aud", "exp", "nbf", "iat", "sub") else "claim"


def _principal(claims: dict[str, Any], settings: OidcSettings) -> TokenCheck:
    subject = claims["sub"]
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
        return TokenCheck(None, "token:invalid-sub")
    organization = claims[settings.org_claim]
    if not isinstance(organization, str) or not ORGANIZATION.match(organization):
        return TokenCheck(None, "token:invalid-organization")
    practitioner = claims.get(settings.practitioner_claim)
    rpps = PRACTITIONER_NUMBER.match(practitioner) if isinstance(practitioner, str) else None
    if practitioner is not None and rpps is None:
        return TokenCheck(None, "token:invalid-practitioner")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        return TokenCheck(None, "token:invalid-scope")
    return TokenCheck(
        Principal(
            client_id=caller_id(settings.issuer, subject),
            organization=organization,
            scopes=frozenset(scope.split()) & frozenset(SCOPES),
            token_subject=subject,
            practitioner_id=f"rpps:{rpps.group(1)}" if rpps is not None else None,
        )
    )


def caller_id(issuer: str, subject: str) -> str:
    """A stable 36-character id for a token's caller, used where an API client's id goes."""
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()
    return CALLER_ID_PREFIX + digest[: 36 - len(CALLER_ID_PREFIX)]
