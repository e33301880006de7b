"""Consent rows bound to the audit chain: a row edited directly in the database is found.

The audit entry that records a consent version (``consent.granted``,
``.amended``, ``.revoked``, ``.expired``) carries ``sha256``, the digest of
that version's whole content, written in the version's own transaction. The
chain makes those entries tamper-evident (``verify``); this module checks the
consent tables against them (``verify_data``, ``consent-service audit verify
--data``):

- a version row whose content no longer matches its entry's digest: changed;
- a version row with no entry: added behind the service's back;
- an entry with no version row: removed;
- a consent's current row that differs from its latest version (say, a
  revoked consent set back to ``active``): changed.

Entries written before this binding existed carry no digest: their versions
are counted as ``unbound``, not reported, since nothing recorded them. So
are versions older than the last purge of the audit log (``purged``): their
entries are gone by design.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from consent_service.db.audit_models import AuditCheckpoint, AuditEntry
from consent_service.db.models import CONSENT_STATE_FIELDS, Consent, ConsentVersion
from consent_service.timefmt import format_instant

VERSION_ACTIONS = ("consent.granted", "consent.amended", "consent.revoked", "consent.expired")
BOUND_FIELDS = ("consent_id", *CONSENT_STATE_FIELDS, "change", "actor", "reason", "recorded_at")
MAX_REPORTED = 100


def version_digest(version: ConsentVersion) -> str:
    """The SHA-256 of a version's whole content, in one canonical JSON form."""
    content = {name: _plain(getattr(version, name)) for name in BOUND_FIELDS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return value


@dataclass
class DataReport:
    """What ``verify_data`` found: counts, and one line per problem naming the consent."""

    consents: int = 0
    versions: int = 0
    unbound: int = 0
    purged: int = 0
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, problem: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)
        else:
            self.more_problems += 1


def verify_data(session: Session) -> DataReport:
    """Check every consent and version row against the digests in the audit log."""
    report = DataReport()
    recorded = _recorded_digests(session)
    purged_before = _last_purge(session)
    latest: dict[str, ConsentVersion] = {}
    for version in _versions(session):
        report.versions += 1
        key = (version.consent_id, version.version)
        digest = recorded.pop(key, None)
        if digest is None and purged_before and version.recorded_at < purged_before:
            report.purged += 1
        elif digest is None:
            report.report(f"consent {version.consent_id} version {version.version}: no audit entry")
        elif digest == "":
            report.unbound += 1
        elif digest != version_digest(version):
            report.report(f"consent {version.consent_id} version {version.version}: changed")
        latest[version.consent_id] = version
    for consent_id, number in sorted(recorded):
        report.report(f"consent {consent_id} version {number}: removed")
    for consent in session.scalars(select(Consent).order_by(Consent.id)):
        report.consents += 1
        current = latest.pop(consent.id, None)
        if current is None:
            report.report(f"consent {consent.id}: no version")
        elif any(getattr(consent, f) != getattr(current, f) for f in CONSENT_STATE_FIELDS):
            report.report(
                f"consent {consent.id}: current row differs from version {current.version}"
            )
    for consent_id in sorted(latest):
        report.report(f"consent {consent_id}: versions without a consent row")
    return report


def _recorded_digests(session: Session) -> dict[tuple[str, int], str]:
    """(consent, version) -> digest ("" for entries written before the binding)."""
    recorded: dict[tuple[str, int], str] = {}
    entries = session.execute(
        select(AuditEntry.objects).where(AuditEntry.action.in_(VERSION_ACTIONS))
    ).scalars()
    for stored in entries:
        # Stored as the exact JSON text that was hashed into the chain.
        objects = json.loads(stored) if isinstance(stored, str) else stored
        consent_id, number = objects.get("consent_id"), objects.get("version")
        if isinstance(consent_id, str) and isinstance(number, int):
            recorded[(consent_id, number)] = str(objects.get("sha256") or "")
    return recorded


def _last_purge(session: Session) -> datetime | None:
    """Before when the audit log was last purged (entries older than it are gone)."""
    body = session.execute(
        select(AuditCheckpoint.body)
        .where(AuditCheckpoint.kind == "purge")
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).scalar()
    if body is None:
        return None
    return datetime.fromisoformat(json.loads(body)["before"].replace("Z", "+00:00"))


def _versions(session: Session, page: int = 1000) -> Iterator[ConsentVersion]:
    """Every version in (consent, version) order, a page at a time (keyset, bounded memory)."""
    after: tuple[str, int] = ("", 0)
    while True:
        rows = session.scalars(
            select(ConsentVersion)
            .where(
                (ConsentVersion.consent_id > after[0])
                | ((ConsentVersion.consent_id == after[0]) & (ConsentVersion.version > after[1]))
            )
            .order_by(ConsentVersion.consent_id, ConsentVersion.version)
            .limit(page)
        ).all()
        yield from rows
        if len(rows) < page:
            return
        after = (rows[-1].consent_id, rows[-1].version)
        session.expunge_all()
