"""The audit log: append-only, hash-chained, verifiable, purgeable behind a checkpoint.

Chains ("shards"). One global chain would make every audited request wait
for the previous one's hash, across all workers. Instead each process keeps a
small pool of chains: a request takes a free chain, appends to it and gives
it back, so appends never read the database and never wait for each other.
A chain's head only moves once its entries are committed; a chain whose last
append may or may not have committed is dropped and a new one started, so a
chain never forks.

Links. Each entry stores ``hash = HMAC-SHA256(audit key, prev_hash + content)``.
Editing, removing, inserting or swapping entries breaks a link that only the
holder of the audit key (``CONSENT_AUDIT_KEYS``) could re-forge. Removing the
last entries of a chain leaves no broken link: signed checkpoints record
every chain's head, and ``verify`` checks that each recorded head is still
there. Purging old entries writes a purge checkpoint recording where each
chain resumes, in the same transaction as the delete.

Writes are audited in the transaction that records the consent version
(``audit_new_version``, called by the one function that records versions,
whoever writes: API, web form, FHIR, expiry), so a version never exists
without its audit entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, event, insert, select
from sqlalchemy.orm import Session, SessionTransaction

from consent_service.audit.data import version_digest
from consent_service.config import Settings
from consent_service.db.audit_models import AuditEntry
from consent_service.db.models import ConsentVersion
from consent_service.timefmt import format_instant

GENESIS = "0" * 64

_entries = cast(Table, AuditEntry.__table__)


# --- Who is acting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """Who acts in the current request; set by the API layer, read when a version is audited."""

    request_id: str | None = None
    client_id: str | None = None
    organization: str | None = None


current_context: ContextVar[Context | None] = ContextVar("audit_context", default=None)
# Consent ids whose new versions this request audited in their own transaction.
versions_audited: ContextVar[list[str] | None] = ContextVar("versions_audited", default=None)


@dataclass(frozen=True, slots=True)
class Record:
    """What to append: an action, its outcome and the ids it touched (nothing else)."""

    action: str
    outcome: str
    status: int | None = None
    objects: Mapping[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    organization: str | None = None
    request_id: str | None = None
    # When it happened; None: when it is appended. A batched entry is written
    # a few milliseconds (during an outage, minutes) after its request.
    occurred_at: datetime | None = None


# --- Keys ------------------------------------------------------------------------------------


class Keyring:
    """Audit keys, newest first: the first signs, every one verifies."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one audit key")
        self._by_id = {key_id(key): key.encode() for key in keys}
        self.signing_id = key_id(keys[0])

    def sign(self, message: bytes, with_id: str | None = None) -> str:
        secret = self._by_id[with_id or self.signing_id]
        return hmac.new(secret, message, hashlib.sha256).hexdigest()

    def knows(self, with_id: str) -> bool:
        return with_id in self._by_id


def key_id(key: str) -> str:
    return hashlib.sha256(b"audit-key-id:" + key.encode()).hexdigest()[:8]


_keyring: Keyring | None = None


def configure(keys: Sequence[str]) -> None:
    """Set the audit keys of this process (the app factory and the CLI call this)."""
    global _keyring
    _keyring = Keyring(keys)


def keyring() -> Keyring:
    """The configured keys; from the environment when nobody configured them."""
    global _keyring
    if _keyring is None:
        _keyring = Keyring(Settings.from_env().audit_keys)
    return _keyring


# --- Chains ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chain:
    shard: str
    seq: int
    hash: str


class _ChainPool:
    """Free chains of this process; a fork starts with none (its parent's are not its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[Chain] = []
        self._pid = os.getpid()

    def acquire(self) -> Chain:
        with self._lock:
            self._forget_parent()
            if self._free:
                return self._free.pop()
        host = socket.gethostname()[:24]
        return Chain(f"{host}-{os.getpid()}-{secrets.token_hex(6)}", 0, GENESIS)

    def release(self, chain: Chain) -> None:
        with self._lock:
            self._forget_parent()
            self._free.append(chain)

    def reset(self) -> None:
        with self._lock:
            self._free.clear()

    def _forget_parent(self) -> None:
        if os.getpid() != self._pid:
            self._free.clear()
            self._pid = os.getpid()


_chains = _ChainPool()


def reset_chains() -> None:
    """Forget this process's chains (tests that empty the table start afresh)."""
    _chains.reset()


def entry_hash(ring: Keyring, with_id: str, row: Mapping[str, Any]) -> str:
    """The HMAC of one entry's content and its predecessor's hash."""
    content = [
        row["shard"],
        row["seq"],
        row["prev_hash"],
        format_instant(row["occurred_at"]),
        row["request_id"],
        row["client_id"],
        row["organization"],
        row["action"],
        row["outcome"],
        row["status"],
        row["objects"],
    ]
    message = json.dumps(content, separators=(",", ":"), ensure_ascii=True).encode()
    return ring.sign(message, with_id)


def _rows(
    chain: Chain, records: Iterable[Record], now: datetime
) -> tuple[list[dict[str, Any]], Chain]:
    ring = keyring()
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "shard": chain.shard,
            "seq": chain.seq + 1,
            "prev_hash": chain.hash,
            "occurred_at": record.occurred_at or now,
            "request_id": record.request_id,
            "client_id": record.client_id,
            "organization": record.organization,
            "action": record.action,
            "outcome": record.outcome,
            "status": record.status,
            "objects": canonical(record.objects),
            "key_id": ring.signing_id,
        }
        row["hash"] = entry_hash(ring, ring.signing_id, row)
        rows.append(row)
        chain = Chain(chain.shard, row["seq"], row["hash"])
    return rows, chain


def canonical(objects: Mapping[str, Any]) -> str:
    return json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# --- Appending -------------------------------------------------------------------------------


def append(connection: Connection, records: Sequence[Record], *, now: datetime) -> None:
    """Append entries with one INSERT on ``connection``, and commit.

    The chain is given back only once the commit succeeded; after any error
    it is dropped, since the database may or may not hold the entries.
    """
    if not records:
        return
    chain = _chains.acquire()
    rows, head = _rows(chain, records, now)
    connection.execute(insert(_entries), rows)
    connection.commit()
    _chains.release(head)


def append_in_session(session: Session, records: Sequence[Record], *, now: datetime) -> None:
    """Stage entries in the session's transaction; the chain moves on only at commit."""
    if not records:
        return
    chain = session.info.pop("audit_chain", None) or _chains.acquire()
    rows, head = _rows(chain, records, now)
    session.info["audit_chain"] = head
    session.execute(insert(_entries), rows)


def audit_new_version(session: Session, version: ConsentVersion) -> None:
    """Append the entry of a version being recorded, in the version's transaction."""
    context = current_context.get() or Context()
    record = Record(
        action=f"consent.{version.change}",
        outcome="ok",
        objects={
            "consent_id": version.consent_id,
            "version": version.version,
            "patient_id": version.patient_id,
            "practitioner_id": version.practitioner_id,
            "actor": version.actor,
            # The version's content, so that a row edited in the database
            # is found (``audit.data``).
            "sha256": version_digest(version),
        },
        client_id=context.client_id,
        organization=version.organization,
        request_id=context.request_id,
    )
    append_in_session(session, [record], now=version.recorded_at)
    session.info.setdefault("audited_consents", []).append(version.consent_id)


@event.listens_for(Session, "after_commit")
def _release_chain(session: Session) -> None:
    chain = session.info.pop("audit_chain", None)
    if chain is not None:
        _chains.release(chain)
    audited = versions_audited.get()
    consents = session.info.pop("audited_consents", [])
    if audited is not None:
        audited.extend(consents)


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted_chain(session: Session, transaction: SessionTransaction) -> None:
    # Reached with a chain still pending only when the transaction did not
    # commit: its entries are gone, and whether the database saw them is
    # not certain after an error, so the chain is never reused.
    if transaction.parent is None:
        session.info.pop("audit_chain", None)
        session.info.pop("audited_consents", None)


# --- Reading ---------------------------------------------------------------------------------


def list_entries(
    connection: Connection,
    *,
    organization: str | None,
    limit: int,
    after_id: int = 0,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    client_id: str | None = None,
    outcome: str | None = None,
    object_id: str | None = None,
) -> list[dict[str, Any]]:
    """Entries in append order (by id), filtered; ``organization`` None means all."""
    query = select(_entries).where(_entries.c.id > after_id).order_by(_entries.c.id).limit(limit)
    if organization is not None:
        query = query.where(_entries.c.organization == organization)
    if since is not None:
        query = query.where(_entries.c.occurred_at >= since)
    if until is not None:
        query = query.where(_entries.c.occurred_at < until)
    if action is not None:
        query = query.where(_entries.c.action == action)
    if client_id is not None:
        query = query.where(_entries.c.client_id == client_id)
    if outcome is not None:
        query = query.where(_entries.c.outcome == outcome)
    if object_id is not None:
        # The ids are stored as canonical JSON strings; match the quoted value.
        query = query.where(_entries.c.objects.contains(json.dumps(object_id)))
    return [entry_dict(dict(row._mapping)) for row in connection.execute(query)]


def entry_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """The wire form of one entry."""
    return {
        "id": row["id"],
        "occurred_at": format_instant(row["occurred_at"]),
        "request_id": row["request_id"],
        "client_id": row["client_id"],
        "organization": row["organization"],
        "action": row["action"],
        "outcome": row["outcome"],
        "status": row["status"],
        "objects": json.loads(row["objects"]),
        "shard": row["shard"],
        "seq": row["seq"],
        "hash": row["hash"],
    }
