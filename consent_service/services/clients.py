"""API clients: an organization's credentials, shown once and stored hashed.

A key reads ``csk_<prefix>_<secret>``: the prefix finds the row by index,
the secret is compared by hash in constant time, so neither a timing
difference nor a database dump reveals a usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.db.models import ApiClient
from consent_service.services.errors import InvalidConsent, NotFound

SCOPES = ("consents:read", "consents:write", "decisions:read", "events:read", "admin")
KEY_MARKER = "csk"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    client_id: str
    organization: str
    scopes: frozenset[str]


def create_client(
    session: Session, *, organization: str, scopes: list[str], name: str, now: datetime
) -> tuple[ApiClient, str]:
    """Create a client; return it and its API key (the only time the key exists in clear)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidConsent({"scopes": [f"Choose among {', '.join(SCOPES)}."]})
    if not organization or len(organization) > 64 or not organization.replace("-", "").isalnum():
        raise InvalidConsent({"organization": ["1-64 letters, digits or '-'."]})
    prefix = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    client = ApiClient(
        id=str(uuid.uuid4()),
        organization=organization,
        name=name,
        scopes=sorted(set(scopes)),
        key_prefix=prefix,
        key_hash=_hash(secret),
        created_at=now,
    )
    session.add(client)
    session.flush()
    return client, f"{KEY_MARKER}_{prefix}_{secret}"


def authenticate(session: Session, *, api_key: str) -> Principal | None:
    """The principal owning ``api_key``, or None for an unknown, malformed or revoked key."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_MARKER or len(parts[1]) != 16:
        return None
    client = session.scalar(select(ApiClient).where(ApiClient.key_prefix == parts[1]))
    if client is None or client.revoked_at is not None:
        return None
    if not hmac.compare_digest(client.key_hash, _hash(parts[2])):
        return None
    return Principal(client.id, client.organization, frozenset(client.scopes))


def list_clients(session: Session) -> list[ApiClient]:
    """Every client, newest first."""
    return list(session.scalars(select(ApiClient).order_by(ApiClient.created_at.desc())))


def revoke_client(session: Session, *, client_id: str, now: datetime) -> ApiClient:
    """Stop a client's key at once."""
    client = session.get(ApiClient, client_id)
    if client is None:
        raise NotFound("No such client.")
    if client.revoked_at is None:
        client.revoked_at = now
    return client


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
