"""Property tests: the service's decisions equal a small, independent reference model's.

Random histories of grants, amendments, revokes and expiries are recorded
through the real services on the real database, at increasing instants;
then random questions at random instants (and "now") are put to
``services.decisions`` and to the model below, which re-states docs/design.md's
rule from scratch without importing ``services.rules``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_service.db.session import Database
from consent_service.services import consents as service
from consent_service.services.decisions import Question, decide_many
from consent_service.services.errors import Conflict, InvalidConsent
from tests.conftest import empty_tables

BASE = datetime(2026, 1, 1, tzinfo=UTC)
CATEGORIES = ("radiographs", "billing")
PURPOSES = ("referral", "emergency")
ACTOR = service.Actor("client:property", "practice-a")
PATIENT, PRACTITIONER = "pat-prop", "rpps:prop"


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


# --- The reference model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    recorded_at: datetime
    status: str
    decision: str
    categories: frozenset[str]
    purposes: frozenset[str]
    valid_from: datetime
    valid_until: datetime | None


@dataclass
class Model:
    history: dict[str, list[Snapshot]] = field(default_factory=dict)

    def decide(self, category: str, purpose: str, instant: datetime) -> tuple[str, Any, Any]:
        covering: dict[str, list[tuple[datetime, str, int]]] = {"deny": [], "permit": []}
        for consent_id, versions in self.history.items():
            in_force = [n for n, v in enumerate(versions) if v.recorded_at <= instant]
            number = in_force[-1] if in_force else 0
            v = versions[number]
            ends = v.valid_until is None or instant < v.valid_until
            if (
                v.status == "active"
                and v.valid_from <= instant
                and ends
                and category in v.categories
                and purpose in v.purposes
            ):
                covering[v.decision].append((v.recorded_at, consent_id, number + 1))
        for kind, reason in (("deny", "denied-by-consent"), ("permit", "permitted-by-consent")):
            if covering[kind]:
                # The latest recorded version decides; among equals, the smallest id.
                latest = max(item[0] for item in covering[kind])
                _, consent_id, version = min(c for c in covering[kind] if c[0] == latest)
                return kind, (consent_id, version), reason
        return "deny", (None, None), "no-consent"


# --- Random histories ------------------------------------------------------------------------

subsets = st.sets(st.sampled_from(CATEGORIES), min_size=1).map(sorted)
purpose_sets = st.sets(st.sampled_from(PURPOSES), min_size=1).map(sorted)
window = st.tuples(st.integers(-30, 60), st.one_of(st.none(), st.integers(1, 90)))
grant = st.tuples(
    st.just("grant"), st.sampled_from(["permit", "deny"]), subsets, purpose_sets, window
)
amend = st.tuples(
    st.just("amend"),
    st.integers(0, 5),
    st.fixed_dictionaries(
        {},
        optional={
            "categories": subsets,
            "purposes": purpose_sets,
            "decision": st.sampled_from(["permit", "deny"]),
            "window": window,
        },
    ),
)
revoke = st.tuples(st.just("revoke"), st.integers(0, 5))
expire = st.tuples(st.just("expire"), st.integers(0, 5))
histories = st.lists(
    st.tuples(st.one_of(grant, amend, revoke, expire), st.integers(1, 20)), min_size=1, max_size=12
)
questions = st.lists(
    st.tuples(st.sampled_from(CATEGORIES), st.sampled_from(PURPOSES), st.integers(-60, 400)),
    min_size=1,
    max_size=12,
)


def _record(database: Database, history: list[Any]) -> tuple[Model, datetime]:
    model = Model()
    ids: list[str] = []
    minute = 0
    for action, gap in history:
        minute += gap
        now = at(minute)
        try:
            with database.transaction() as session:
                result = _apply(session, action, ids, now)
        except (Conflict, InvalidConsent):
            continue
        if result is None:
            continue
        snapshot = Snapshot(
            recorded_at=now,
            status=result["status"],
            decision=result["decision"],
            categories=frozenset(result["categories"]),
            purposes=frozenset(result["purposes"]),
            valid_from=datetime.fromisoformat(result["valid_from"]),
            valid_until=datetime.fromisoformat(result["valid_until"])
            if result["valid_until"]
            else None,
        )
        if result["version"] == 1:
            ids.append(result["id"])
        model.history.setdefault(result["id"], []).append(snapshot)
        assert len(model.history[result["id"]]) == result["version"]
    return model, at(minute + 1)


def _apply(session: Any, action: tuple[Any, ...], ids: list[str], now: datetime) -> Any:
    kind = action[0]
    if kind == "grant":
        _, decision, categories, purposes, (start, length) = action
        return service.grant_consent(
            session,
            actor=ACTOR,
            patient_id=PATIENT,
            practitioner_id=PRACTITIONER,
            categories=categories,
            purposes=purposes,
            decision=decision,
            valid_from=now + timedelta(minutes=start),
            valid_until=None if length is None else now + timedelta(minutes=start + length),
            collection={"method": "paper"},
            now=now,
        )
    if not ids:
        return None
    consent_id = ids[action[1] % len(ids)]
    current = service.get_consent(session, organization="practice-a", consent_id=consent_id)
    if kind == "amend":
        changes = dict(action[2])
        if not changes:
            return None
        if "window" in changes:
            start, length = changes.pop("window")
            changes["valid_from"] = now + timedelta(minutes=start)
            changes["valid_until"] = (
                None if length is None else now + timedelta(minutes=start + length)
            )
        return service.amend_consent(
            session,
            actor=ACTOR,
            consent_id=consent_id,
            expected_version=current["version"],
            changes=changes,
            now=now,
        )
    if kind == "revoke":
        return service.revoke_consent(
            session, actor=ACTOR, consent_id=consent_id, reason=None, now=now
        )
    return service.expire_consent(
        session, consent_id=consent_id, expected_version=current["version"], now=now
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories, asked=questions)
def test_decisions_match_the_reference_model(
    database: Database, history: list[Any], asked: list[Any]
) -> None:
    empty_tables(database)
    model, now = _record(database, history)
    batch = [
        Question(PATIENT, PRACTITIONER, category, purpose, at(minute))
        for category, purpose, minute in asked
    ]
    # The edges matter most: exactly at each recording, and just before it.
    edges = sorted({v.recorded_at for versions in model.history.values() for v in versions})
    batch += [
        Question(PATIENT, PRACTITIONER, category, purpose, instant)
        for edge in edges
        for instant in (edge, edge - timedelta(microseconds=1))
        for category in CATEGORIES
        for purpose in PURPOSES
    ]
    batch += [replace(question, at=None) for question in batch[: len(asked)]]
    with database.read_only() as connection:
        outcomes = decide_many(connection, organization="practice-a", questions=batch, now=now)
    for question, outcome in zip(batch, outcomes, strict=True):
        instant = question.at or now
        expected = model.decide(question.category, question.purpose, instant)
        got = (outcome.decision, (outcome.consent_id, outcome.version), outcome.reason)
        assert got == expected, (question, history)
