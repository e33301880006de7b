"""The pure decision rule (services/rules.py), case by case and against a reference model.

The reference model below is the rule as docs/design.md words it, written
independently of the service's code; hypothesis compares the two on random
histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from consent_service.services.rules import (
    DENIED_BY_CONSENT,
    NO_CONSENT,
    PERMITTED_BY_CONSENT,
    Outcome,
    decide,
    version_in_force,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MICRO = timedelta(microseconds=1)


@dataclass
class V:
    consent_id: str = "c1"
    version: int = 1
    status: str = "active"
    decision: str = "permit"
    categories: Sequence[str] = ("dental-chart",)
    purposes: Sequence[str] = ("referral",)
    valid_from: datetime = T0
    valid_until: datetime | None = None
    recorded_at: datetime = T0


def ask(histories: list[list[V]], at: datetime, category: str = "dental-chart") -> Outcome:
    return decide(histories, category, "referral", at)


def test_no_consent_denies() -> None:
    assert ask([], T0) == Outcome("deny", None, None, NO_CONSENT)
    assert ask([[]], T0) == Outcome("deny", None, None, NO_CONSENT)


def test_permit_and_deny_beats_permit() -> None:
    permit = [V(consent_id="p")]
    deny = [V(consent_id="d", decision="deny")]
    assert ask([permit], T0) == Outcome("permit", "p", 1, PERMITTED_BY_CONSENT)
    assert ask([permit, deny], T0) == Outcome("deny", "d", 1, DENIED_BY_CONSENT)
    assert ask([deny, permit], T0) == Outcome("deny", "d", 1, DENIED_BY_CONSENT)


def test_validity_bounds() -> None:
    history = [V(valid_from=T0, valid_until=T0 + DAY, recorded_at=T0 - DAY)]
    assert ask([history], T0 - MICRO).reason == NO_CONSENT
    assert ask([history], T0).decision == "permit"
    assert ask([history], T0 + DAY - MICRO).decision == "permit"
    assert ask([history], T0 + DAY).reason == NO_CONSENT


def test_category_and_purpose_must_both_be_listed() -> None:
    history = [V(categories=("billing", "identity"), purposes=("referral",))]
    assert ask([history], T0, "identity").decision == "permit"
    assert ask([history], T0, "radiographs").reason == NO_CONSENT
    assert decide([history], "billing", "emergency", T0).reason == NO_CONSENT


def test_version_in_force_and_late_recording() -> None:
    v1 = V(version=1, valid_from=T0 - 10 * DAY, recorded_at=T0)
    v2 = V(version=2, decision="deny", valid_from=T0 - 10 * DAY, recorded_at=T0 + DAY)
    v3 = V(version=3, status="revoked", valid_from=T0 - 10 * DAY, recorded_at=T0 + 2 * DAY)
    history = [v1, v2, v3]
    # Before version 1 was recorded: version 1 (a paper form typed in later).
    assert version_in_force(history, T0 - 5 * DAY) is v1
    assert ask([history], T0 - 5 * DAY) == Outcome("permit", "c1", 1, PERMITTED_BY_CONSENT)
    assert version_in_force(history, T0 + DAY - MICRO) is v1
    # At the instant a version is recorded it is in force.
    assert version_in_force(history, T0 + DAY) is v2
    assert ask([history], T0 + DAY) == Outcome("deny", "c1", 2, DENIED_BY_CONSENT)
    assert ask([history], T0 + 2 * DAY) == Outcome("deny", None, None, NO_CONSENT)
    assert ask([history], T0 - 10 * DAY - MICRO).reason == NO_CONSENT


def test_the_latest_recorded_deciding_consent_names_the_answer() -> None:
    older = [V(consent_id="b", recorded_at=T0 - DAY)]
    newer = [V(consent_id="a", recorded_at=T0)]
    tie = [V(consent_id="0", recorded_at=T0)]
    assert ask([older, newer], T0).consent_id == "a"
    assert ask([newer, older, tie], T0).consent_id == "0"


# The rule as docs/design.md words it, for the property test.
def reference(histories: list[list[V]], category: str, purpose: str, at: datetime) -> str:
    kinds = set()
    for history in histories:
        recorded = [v for v in history if v.recorded_at <= at]
        version = recorded[-1] if recorded else history[0]
        in_window = version.valid_from <= at and (
            version.valid_until is None or at < version.valid_until
        )
        if (
            version.status == "active"
            and in_window
            and category in version.categories
            and purpose in version.purposes
        ):
            kinds.add(version.decision)
    return "deny" if "deny" in kinds or not kinds else "permit"


CATEGORIES = ("dental-chart", "billing")
offsets = st.integers(min_value=-5, max_value=5).map(lambda n: T0 + n * DAY)


@st.composite
def histories(draw: st.DrawFn, consent_id: str) -> list[V]:
    count = draw(st.integers(min_value=1, max_value=4))
    start = draw(offsets)
    recorded = sorted(draw(st.lists(offsets, min_size=count, max_size=count)))
    versions = []
    for number, when in enumerate(recorded, 1):
        length = draw(st.one_of(st.none(), st.integers(1, 6)))
        end = None if length is None else start + length * DAY
        versions.append(
            V(
                consent_id=consent_id,
                version=number,
                status=draw(st.sampled_from(["active", "active", "revoked", "expired"])),
                decision=draw(st.sampled_from(["permit", "deny"])),
                categories=draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, unique=True)),
                purposes=("referral",),
                valid_from=start,
                valid_until=end,
                recorded_at=when,
            )
        )
    return versions


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("abcdef"), unique=True, max_size=4).flatmap(
        lambda ids: st.tuples(*[histories(i) for i in ids])
    ),
    offsets.flatmap(lambda at: st.sampled_from([at - MICRO, at, at + MICRO])),
    st.sampled_from(CATEGORIES),
)
def test_rule_matches_the_reference_model(
    drawn: tuple[list[V], ...], at: datetime, category: str
) -> None:
    consents = list(drawn)
    outcome = decide(consents, category, "referral", at)
    assert outcome.decision == reference(consents, category, "referral", at)
    assert decide(list(reversed(consents)), category, "referral", at) == outcome
    if outcome.reason == NO_CONSENT:
        assert outcome.consent_id is None and outcome.version is None
    else:
        deciding = next(h for h in consents if h[0].consent_id == outcome.consent_id)
        in_force = version_in_force(deciding, at)
        assert in_force.version == outcome.version
        assert in_force.decision == outcome.decision
    # A covering refusal added to any question always wins.
    refusal = [V(consent_id="z", decision="deny", categories=CATEGORIES, valid_from=at)]
    assert decide([*consents, refusal], category, "referral", at).decision == "deny"
    # A revoked one changes nothing.
    withdrawn = [replace(refusal[0], status="revoked")]
    assert decide([*consents, withdrawn], category, "referral", at) == outcome
