"""The decision rule, as a pure function over consent histories.

Kept free of the database so that the same rule can be checked against the
language-neutral vectors in ``schemas/decision-vectors.json`` and against a
reference model in property tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

NO_CONSENT = "no-consent"
DENIED_BY_CONSENT = "denied-by-consent"
PERMITTED_BY_CONSENT = "permitted-by-consent"


class VersionView(Protocol):
    """What the rule reads of one consent version."""

    consent_id: str
    version: int
    status: str
    decision: str
    categories: Sequence[str]
    purposes: Sequence[str]
    valid_from: datetime
    valid_until: datetime | None
    recorded_at: datetime


EMERGENCY_ACCESS = "emergency-access"


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: str
    consent_id: str | None
    version: int | None
    reason: str
    # Set when an open emergency access answered permit (reason ``emergency-access``).
    emergency_access_id: str | None = None


def version_in_force(history: Sequence[VersionView], at: datetime) -> VersionView:
    """The latest version recorded at or before ``at``; version 1 before any.

    A consent entered after the fact (a paper form typed in later) counts from
    its ``valid_from``, so instants before version 1 was recorded use version 1.
    """
    chosen = history[0]
    for candidate in history:
        if candidate.recorded_at <= at:
            chosen = candidate
        else:
            break
    return chosen


def covers(version: VersionView, category: str, purpose: str, at: datetime) -> bool:
    """Whether this version speaks to the question at this instant."""
    if version.status != "active":
        return False
    if at < version.valid_from:
        return False
    if version.valid_until is not None and at >= version.valid_until:
        return False
    return category in version.categories and purpose in version.purposes


def decide(
    histories: Iterable[Sequence[VersionView]], category: str, purpose: str, at: datetime
) -> Outcome:
    """Apply the rule: any covering deny wins, else any covering permit, else deny.

    Each history holds one consent's versions, oldest first. When several
    consents cover the question with the deciding kind, the one whose version
    in force was recorded last names the answer (ties: the smallest id), so
    the answer is deterministic.
    """
    deciding: dict[str, list[VersionView]] = {"deny": [], "permit": []}
    for history in histories:
        if not history:
            continue
        current = version_in_force(history, at)
        if covers(current, category, purpose, at):
            deciding[current.decision].append(current)
    for kind, reason in (("deny", DENIED_BY_CONSENT), ("permit", PERMITTED_BY_CONSENT)):
        if deciding[kind]:
            by_id = sorted(deciding[kind], key=lambda version: version.consent_id)
            winner = max(by_id, key=lambda version: version.recorded_at)
            return Outcome(kind, winner.consent_id, winner.version, reason)
    return Outcome("deny", None, None, NO_CONSENT)
