"""The consent decision rule, the kit's own copy.

The service holds the same rule; both are checked against the shared
vectors in ``schemas/decision-vectors.json`` so that the two cannot drift.
The kit keeps its own code rather than importing the service because
practitioner software installs the kit without the service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

NO_CONSENT = "no-consent"
DENIED_BY_CONSENT = "denied-by-consent"
PERMITTED_BY_CONSENT = "permitted-by-consent"


@dataclass(frozen=True, slots=True)
class Version:
    """What the rule reads of one consent version."""

    consent_id: str
    version: int
    status: str
    decision: str
    categories: tuple[str, ...]
    purposes: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one question, naming the consent and version that decided it.

    ``consent_id`` and ``version`` are ``None`` when no consent covers the
    question (``reason == "no-consent"``), which is a deny, and when an
    emergency access answered (``reason == "emergency-access"``), a permit.
    """

    decision: str
    consent_id: str | None
    version: int | None
    reason: str
    # Set when an open emergency access answered permit (reason ``emergency-access``).
    emergency_access_id: str | None = None

    @property
    def permitted(self) -> bool:
        return self.decision == "permit"


def version_in_force(history: Sequence[Version], at: datetime) -> Version:
    """The latest version recorded at or before ``at``; version 1 before any.

    A consent entered after the fact (a paper form typed in later) counts from
    its ``valid_from``, so instants before version 1 was recorded use version 1.
    """
    chosen = history[0]
    for candidate in history:
        if candidate.recorded_at > at:
            break
        chosen = candidate
    return chosen


def covers(version: Version, category: str, purpose: str, at: datetime) -> bool:
    """Whether this version speaks to the question at this instant."""
    if version.status != "active":
        return False
    if at < version.valid_from:
        return False
    if version.valid_until is not None and at >= version.valid_until:
        return False
    return category in version.categories and purpose in version.purposes


def decide(
    histories: Iterable[Sequence[Version]], category: str, purpose: str, at: datetime
) -> Decision:
    """Any covering deny wins, else any covering permit, else deny ("no consent").

    Each history holds one consent's versions, oldest first. Among several
    consents of the deciding kind, the one whose version in force was
    recorded last names the answer, the smallest consent id breaking ties,
    so that the answer is the same as the service's, id for id.
    """
    deciding: dict[str, list[Version]] = {"deny": [], "permit": []}
    for history in histories:
        if not history:
            continue
        current = version_in_force(history, at)
        if covers(current, category, purpose, at):
            deciding[current.decision].append(current)
    for kind, reason in (("deny", DENIED_BY_CONSENT), ("permit", PERMITTED_BY_CONSENT)):
        candidates = deciding[kind]
        if candidates:
            by_id = sorted(candidates, key=lambda v: v.consent_id)
            # max() keeps the first of equal keys: the smallest id among ties.
            winner = max(by_id, key=lambda v: v.recorded_at)
            return Decision(kind, winner.consent_id, winner.version, reason)
    return Decision("deny", None, None, NO_CONSENT)
