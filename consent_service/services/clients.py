"""API clients and their keys: shown once, stored only as a keyed hash.

A key reads ``csk_<prefix>_<secret>``. The prefix finds the key row by index;
the secret is checked by HMAC-SHA256 under a server-side pepper
(``CONSENT_API_KEY_PEPPER``, kept out of the database) and compared in
constant time. A database dump alone therefore neither reveals a key nor lets
anyone test guesses offline.

A client holds at most two live keys, so that a partner can roll a new key
out before the old one stops (``rotate_key`` gives the old key a grace
period). Revoking a key or a client takes effect within
``CONSENT_API_KEY_CACHE_MS`` (at most one second; ``services.key_cache``):
a worker trusts a key it found valid for that long, then asks the database
again. Refused keys are checked against the database on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from consent_service.config import DEV_API_KEY_PEPPER
from consent_service.db.audit_models import ApiKey
from consent_service.db.models import ApiClient
from consent_service.services.errors import Conflict, InvalidConsent, NotFound

SCOPES = (
    "consents:read",
    "consents:write",
    "decisions:read",
    "events:read",
    "events:ack",
    "emergency:write",
    "admin",
)
KEY_MARKER = "csk"
PREFIX_LENGTH = 16
MAX_LIVE_KEYS = 2
LEGACY_SCHEME = "sha256"
DEV_PEPPERS = (DEV_API_KEY_PEPPER,)

_keys = ApiKey.__table__
_clients = ApiClient.__table__
_LOOKUP = select(
    _keys.c.key_hash,
    _keys.c.expires_at,
    _keys.c.revoked_at,
    _clients.c.id.label("client_id"),
    _clients.c.organization,
    _clients.c.scopes,
    _clients.c.revoked_at.label("client_revoked_at"),
).join(_clients, _clients.c.id == _keys.c.client_id)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request: an API client, or an access token's subject.

    A token's caller has no client row: its ``client_id`` is derived from the
    issuer and subject (``identity.tokens``), so that idempotency keys, rate
    limits and audit entries keep one stable id per caller.
    """

    client_id: str
    organization: str
    scopes: frozenset[str]
    # Set for an OpenID Connect access token: its ``sub`` claim.
    token_subject: str | None = None
    # Set for a practitioner's token (``rpps:<value>``): it acts as that practitioner only.
    practitioner_id: str | None = None

    @property
    def actor(self) -> str:
        """Who a consent version names as its author (``client:<id>`` or ``token:<sub>``)."""
        if self.token_subject is not None:
            return f"token:{self.token_subject}"
        return f"client:{self.client_id}"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of checking a key; ``failure`` says why it was refused.

    A refused key whose prefix matched still names its client, so that the
    audit log can tell "revoked key of client X" from "random garbage".
    """

    principal: Principal | None
    failure: str | None = None
    client_id: str | None = None
    organization: str | None = None
    # A valid key's own end (a rotation's grace period), for ``key_cache``.
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    client_id: str
    key_id: str
    api_key: str
    expires_at: datetime | None


def create_client(
    session: Session,
    *,
    organization: str,
    scopes: list[str],
    name: str,
    now: datetime,
    peppers: Sequence[str] = DEV_PEPPERS,
    expires_at: datetime | None = None,
) -> tuple[ApiClient, str]:
    """Create a client and its first key; return both (the only time the key is in clear)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidConsent({"scopes": [f"Choose among {', '.join(SCOPES)}."]})
    if not organization or len(organization) > 64 or not organization.replace("-", "").isalnum():
        raise InvalidConsent({"organization": ["1-64 letters, digits or '-'."]})
    client = ApiClient(
        id=str(uuid.uuid4()),
        organization=organization,
        name=name,
        scopes=sorted(set(scopes)),
        created_at=now,
    )
    session.add(client)
    session.flush()
    issued = _issue_key(session, client.id, peppers=peppers, now=now, expires_at=expires_at)
    return client, issued.api_key


def rotate_key(
    session: Session,
    *,
    client_id: str,
    now: datetime,
    grace: timedelta,
    peppers: Sequence[str] = DEV_PEPPERS,
    expires_at: datetime | None = None,
) -> IssuedKey:
    """Issue a new key; the client's current key keeps working for ``grace``, then stops.

    Refused while the client already holds two live keys: revoke one first,
    so that no client ever holds more than two.
    """
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound("No such client.")
    if client.revoked_at is not None:
        raise Conflict("The client is revoked.")
    live = _live_keys(session, client_id, now)
    if len(live) >= MAX_LIVE_KEYS:
        raise Conflict("The client already holds two live keys; revoke one first.")
    for key in live:
        deadline = now + grace
        if key.expires_at is None or key.expires_at > deadline:
            key.expires_at = deadline
    return _issue_key(session, client_id, peppers=peppers, now=now, expires_at=expires_at)


def revoke_key(session: Session, *, prefix: str, now: datetime) -> ApiKey:
    """Stop one key at once (by its public prefix)."""
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise NotFound("No such key.")
    if key.revoked_at is None:
        key.revoked_at = now
    return key


def check_key(
    connection: Connection | Session,
    *,
    api_key: str,
    now: datetime,
    peppers: Sequence[str] = DEV_PEPPERS,
) -> AuthResult:
    """Check ``api_key``: the principal, or why it was refused."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_MARKER or len(parts[1]) != PREFIX_LENGTH:
        return AuthResult(None, "malformed")
    row = connection.execute(_LOOKUP.where(_keys.c.prefix == parts[1])).first()
    if row is None:
        # Spend the same HMAC as for a real key, so timing does not tell
        # whether a prefix exists.
        _matches(f"{_pepper_id(peppers[0])}${'0' * 64}", parts[2], peppers)
        return AuthResult(None, "unknown")
    known = {"client_id": row.client_id, "organization": row.organization}
    if not _matches(row.key_hash, parts[2], peppers):
        return AuthResult(None, "bad-secret", **known)
    if row.revoked_at is not None or row.client_revoked_at is not None:
        return AuthResult(None, "revoked", **known)
    if row.expires_at is not None and row.expires_at <= now:
        return AuthResult(None, "expired", **known)
    caller = Principal(row.client_id, row.organization, frozenset(row.scopes))
    return AuthResult(caller, expires_at=row.expires_at)


def list_clients(session: Session) -> list[ApiClient]:
    """Every client, newest first."""
    return list(session.scalars(select(ApiClient).order_by(ApiClient.created_at.desc())))


def list_keys(session: Session, *, client_id: str) -> list[ApiKey]:
    """A client's keys, newest first (hashes stay inside)."""
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.client_id == client_id).order_by(ApiKey.created_at.desc())
        )
    )


def revoke_client(session: Session, *, client_id: str, now: datetime) -> ApiClient:
    """Stop every key of a client at once."""
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound("No such client.")
    if client.revoked_at is None:
        client.revoked_at = now
    for key in list_keys(session, client_id=client_id):
        if key.revoked_at is None:
            key.revoked_at = now
    return client


def hash_secret(secret: str, pepper: str) -> str:
    """The stored form of a key's secret: pepper id and HMAC-SHA256."""
    digest = hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()
    return f"{_pepper_id(pepper)}${digest}"


def _issue_key(
    session: Session,
    client_id: str,
    *,
    peppers: Sequence[str],
    now: datetime,
    expires_at: datetime | None,
) -> IssuedKey:
    if expires_at is not None and expires_at <= now:
        raise InvalidConsent({"expires_at": ["Must be in the future."]})
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=str(uuid.uuid4()),
        client_id=client_id,
        prefix=prefix,
        key_hash=hash_secret(secret, peppers[0]),
        created_at=now,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return IssuedKey(client_id, key.id, f"{KEY_MARKER}_{prefix}_{secret}", expires_at)


def _live_keys(session: Session, client_id: str, now: datetime) -> list[ApiKey]:
    return [
        key
        for key in list_keys(session, client_id=client_id)
        if key.revoked_at is None and (key.expires_at is None or key.expires_at > now)
    ]


def _matches(stored: str, secret: str, peppers: Sequence[str]) -> bool:
    scheme, _, _digest = stored.partition("$")
    if scheme == LEGACY_SCHEME:
        # Keys issued before migration 0004: unkeyed SHA-256 until rotated.
        expected = f"{LEGACY_SCHEME}${hashlib.sha256(secret.encode()).hexdigest()}"
        return hmac.compare_digest(stored, expected)
    for pepper in peppers:
        if _pepper_id(pepper) == scheme:
            return hmac.compare_digest(stored, hash_secret(secret, pepper))
    return False


def _pepper_id(pepper: str) -> str:
    return hashlib.sha256(b"pepper-id:" + pepper.encode()).hexdigest()[:8]
