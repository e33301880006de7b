"""Walking every chain and checkpoint; the report names the first broken entry."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, select, tuple_
from sqlalchemy.orm import Session

from consent_service.audit.chain import GENESIS, Keyring, entry_hash, keyring
from consent_service.audit.checkpoints import latest_floors
from consent_service.db.audit_models import AuditCheckpoint, AuditEntry

_entries = cast(Table, AuditEntry.__table__)


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
    floors = latest_floors(connection)
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
