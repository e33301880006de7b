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
(``before_flush`` on every ORM session, whoever writes: API, web form,
expiry), so a version never exists without its audit entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, event, func, insert, select, tuple_
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from consent_service.config import Settings
from consent_service.db.audit_models import AuditCheckpoint, AuditEntry
from consent_service.db.models import ConsentVersion
from consent_service.timefmt import format_instant

GENESIS = "0" * 64

_entries = cast(Table, AuditEntry.__table__)


# --- Who is acting ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """Who acts in the current request; set by the API layer, read by the flush hook."""

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
    session.add_all(AuditEntry(**row) for row in rows)


@event.listens_for(Session, "before_flush")
def _audit_new_versions(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    versions = [obj for obj in session.new if isinstance(obj, ConsentVersion)]
    if not versions:
        return
    context = current_context.get() or Context()
    records = [
        Record(
            action=f"consent.{version.change}",
            outcome="ok",
            objects={
                "consent_id": version.consent_id,
                "version": version.version,
                "patient_id": version.patient_id,
                "practitioner_id": version.practitioner_id,
                "actor": version.actor,
            },
            client_id=context.client_id,
            organization=version.organization,
            request_id=context.request_id,
        )
        for version in sorted(versions, key=lambda v: (v.consent_id, v.version))
    ]
    append_in_session(session, records, now=max(v.recorded_at for v in versions))
    session.info.setdefault("audited_consents", []).extend(v.consent_id for v in versions)


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


# --- Checkpoints -----------------------------------------------------------------------------


def heads(connection: Connection | Session) -> dict[str, list[Any]]:
    """Every chain's last entry: ``{shard: [seq, hash]}``."""
    last = (
        select(_entries.c.shard, func.max(_entries.c.seq).label("seq"))
        .group_by(_entries.c.shard)
        .subquery()
    )
    rows = connection.execute(
        select(_entries.c.shard, _entries.c.seq, _entries.c.hash).join(
            last, (last.c.shard == _entries.c.shard) & (last.c.seq == _entries.c.seq)
        )
    )
    return {row.shard: [row.seq, row.hash] for row in rows}


def create_checkpoint(session: Session, *, now: datetime) -> dict[str, Any]:
    """Sign and store every chain's current head; return the exportable checkpoint."""
    return _store_checkpoint(session, kind="checkpoint", now=now, extra={})


def purge(session: Session, *, before: datetime, now: datetime) -> tuple[int, dict[str, Any]]:
    """Remove entries older than ``before`` behind a signed purge checkpoint.

    Per chain, everything up to its last entry older than ``before`` goes;
    the checkpoint records that entry's seq and hash (the "floor") so the
    remaining entries still link up. Delete and checkpoint commit together.
    """
    floors = dict(_latest_floors(session))
    cut = (
        select(_entries.c.shard, func.max(_entries.c.seq).label("seq"))
        .where(_entries.c.occurred_at < before)
        .group_by(_entries.c.shard)
        .subquery()
    )
    rows = session.execute(
        select(_entries.c.shard, _entries.c.seq, _entries.c.hash).join(
            cut, (cut.c.shard == _entries.c.shard) & (cut.c.seq == _entries.c.seq)
        )
    ).all()
    removed = 0
    for row in rows:
        floors[row.shard] = [row.seq, row.hash]
        result = session.execute(
            delete(AuditEntry).where(AuditEntry.shard == row.shard, AuditEntry.seq <= row.seq)
        )
        removed += result.rowcount  # type: ignore[attr-defined]
    extra = {"before": format_instant(before), "floors": floors}
    checkpoint = _store_checkpoint(session, kind="purge", now=now, extra=extra)
    return removed, checkpoint


def _store_checkpoint(
    session: Session, *, kind: str, now: datetime, extra: Mapping[str, Any]
) -> dict[str, Any]:
    ring = keyring()
    previous = session.scalar(
        select(AuditCheckpoint.signature).order_by(AuditCheckpoint.id.desc()).limit(1)
    )
    body = canonical(
        {
            "kind": kind,
            "created_at": format_instant(now),
            "previous": previous,
            "heads": heads(session),
            **extra,
        }
    )
    signature = ring.sign(body.encode())
    session.add(
        AuditCheckpoint(
            created_at=now, kind=kind, body=body, key_id=ring.signing_id, signature=signature
        )
    )
    session.flush()
    return {"body": body, "key_id": ring.signing_id, "signature": signature}


def _latest_floors(connection: Connection | Session) -> dict[str, list[Any]]:
    body = connection.execute(
        select(AuditCheckpoint.body)
        .where(AuditCheckpoint.kind == "purge")
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).scalar()
    if body is None:
        return {}
    floors: dict[str, list[Any]] = json.loads(body)["floors"]
    return floors


# --- Verifying -------------------------------------------------------------------------------


@dataclass
class Report:
    """What ``verify`` found; ``first_broken`` is the lowest entry id at fault, if any."""

    entries: int = 0
    chains: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    first_broken: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, problem: str, entry_id: int | None = None) -> None:
        self.problems.append(problem)
        if entry_id is not None and (self.first_broken is None or entry_id < self.first_broken):
            self.first_broken = entry_id


def verify(
    connection: Connection | Session,
    *,
    exported: Sequence[Mapping[str, Any]] = (),
    batch: int = 5000,
) -> Report:
    """Walk every chain and every checkpoint; report what does not hold.

    ``exported`` are checkpoints kept outside the database (``audit
    checkpoint`` prints them): their heads must still be present, which
    catches a truncated tail even if the stored checkpoints were removed too.
    """
    ring = keyring()
    report = Report()
    checkpoints = _verify_checkpoints(connection, ring, report)
    for item in exported:
        body = _verified_body(ring, item, report, "exported checkpoint")
        if body is not None:
            checkpoints.append(body)
    floors = _latest_floors(connection)
    seen: dict[str, tuple[int, str]] = {}
    broken: set[str] = set()
    for row in _all_entries(connection, batch):
        shard = row["shard"]
        if shard not in seen:
            report.chains += 1
            floor_seq, floor_hash = floors.get(shard, [0, GENESIS])
            seen[shard] = (floor_seq, floor_hash)
        expected_seq, expected_prev = seen[shard][0] + 1, seen[shard][1]
        report.entries += 1
        problem = _link_problem(ring, row, expected_seq, expected_prev)
        if problem:
            # Only a chain's first break names the first broken entry: later
            # breaks in the same chain may be its consequences.
            report.fail(
                f"entry {row['id']} (chain {shard}, seq {row['seq']}): {problem}",
                None if shard in broken else row["id"],
            )
            broken.add(shard)
        seen[shard] = (row["seq"], row["hash"])
    _check_heads(checkpoints, seen, floors, report, connection)
    return report


def _all_entries(connection: Connection | Session, batch: int) -> Iterator[dict[str, Any]]:
    """Every entry by chain and seq, read in keyset pages (no server-side cursor needed)."""
    key = tuple_(_entries.c.shard, _entries.c.seq)
    query = select(_entries).order_by(_entries.c.shard, _entries.c.seq).limit(batch)
    last: tuple[str, int] | None = None
    while True:
        page = query if last is None else query.where(key > tuple_(*last))
        rows = [dict(row._mapping) for row in connection.execute(page)]
        yield from rows
        if len(rows) < batch:
            return
        last = (rows[-1]["shard"], rows[-1]["seq"])


def _link_problem(ring: Keyring, row: Mapping[str, Any], seq: int, prev: str) -> str | None:
    if row["seq"] != seq:
        return f"expected seq {seq}: entries missing or inserted"
    if row["prev_hash"] != prev:
        return "does not link to its predecessor"
    if not ring.knows(row["key_id"]):
        return "signed with an unknown audit key"
    if not hmac.compare_digest(row["hash"], entry_hash(ring, row["key_id"], row)):
        return "content changed"
    return None


def _verify_checkpoints(
    connection: Connection | Session, ring: Keyring, report: Report
) -> list[dict[str, Any]]:
    bodies = []
    previous = None
    table = AuditCheckpoint.__table__
    for checkpoint in connection.execute(select(table).order_by(table.c.id)):
        report.checkpoints += 1
        item = {
            "body": checkpoint.body,
            "key_id": checkpoint.key_id,
            "signature": checkpoint.signature,
        }
        body = _verified_body(ring, item, report, f"checkpoint {checkpoint.id}")
        if body is None:
            continue
        if body["previous"] != previous:
            report.fail(f"checkpoint {checkpoint.id}: the checkpoint before it is missing")
        previous = checkpoint.signature
        bodies.append(body)
    return bodies


def _verified_body(
    ring: Keyring, item: Mapping[str, Any], report: Report, name: str
) -> dict[str, Any] | None:
    key = str(item.get("key_id", ""))
    body = str(item.get("body", ""))
    if not ring.knows(key) or not hmac.compare_digest(
        str(item.get("signature", "")), ring.sign(body.encode(), key)
    ):
        report.fail(f"{name}: bad signature")
        return None
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def _check_heads(
    checkpoints: Iterable[Mapping[str, Any]],
    seen: Mapping[str, tuple[int, str]],
    floors: Mapping[str, list[Any]],
    report: Report,
    connection: Connection | Session,
) -> None:
    for checkpoint in checkpoints:
        for shard, (seq, digest) in checkpoint["heads"].items():
            floor_seq = floors.get(shard, [0, GENESIS])[0]
            if seq <= floor_seq:
                continue
            last = seen.get(shard)
            if last is None or last[0] < seq:
                report.fail(
                    f"chain {shard}: entries up to seq {seq}, recorded by the checkpoint of "
                    f"{checkpoint['created_at']}, are missing (truncated)"
                )
                continue
            stored = connection.execute(
                select(_entries.c.id, _entries.c.hash).where(
                    _entries.c.shard == shard, _entries.c.seq == seq
                )
            ).first()
            if stored is None or stored.hash != digest:
                report.fail(
                    f"chain {shard}: seq {seq} differs from the checkpoint of "
                    f"{checkpoint['created_at']}",
                    stored.id if stored is not None else None,
                )
