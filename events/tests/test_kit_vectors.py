"""The kit's decision rule against the shared vectors in schemas/decision-vectors.json.

Run twice: on the pure rule, and end to end through the store (events applied,
then ``is_permitted``), since the store's selection of consents is part of
the answer too. The service runs the same file in tests/unit.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kit_helpers import event, snapshot

from consent_events import ConsentView
from consent_events.rules import Version, decide

VECTORS = Path(__file__).resolve().parents[2] / "schemas" / "decision-vectors.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
IDS = [case["name"] for case in CASES]


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _answer(decision: Any) -> dict[str, Any]:
    return {
        "decision": decision.decision,
        "consent_id": decision.consent_id,
        "version": decision.version,
        "reason": decision.reason,
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rule_gives_the_expected_answer(case: dict[str, Any]) -> None:
    question = case["question"]
    histories = [
        [
            Version(
                consent_id=consent["consent_id"],
                version=v["version"],
                status=v["status"],
                decision=v["decision"],
                categories=tuple(v["categories"]),
                purposes=tuple(v["purposes"]),
                valid_from=datetime.fromisoformat(v["valid_from"]),
                valid_until=_instant(v["valid_until"]),
                recorded_at=datetime.fromisoformat(v["recorded_at"]),
            )
            for v in consent["versions"]
        ]
        for consent in case["consents"]
        if (consent["patient_id"], consent["practitioner_id"])
        == (question["patient_id"], question["practitioner_id"])
    ]
    at = datetime.fromisoformat(question["at"])
    decision = decide(histories, question["category"], question["purpose"], at)
    assert _answer(decision) == case["expected"], case["description"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_view_over_applied_events_gives_the_expected_answer(case: dict[str, Any]) -> None:
    view = ConsentView(":memory:", max_lag_seconds=None, max_lag_events=None)
    events = [
        event(
            snapshot(
                consent["consent_id"],
                v["version"],
                change=v["change"],
                patient_id=consent["patient_id"],
                practitioner_id=consent["practitioner_id"],
                decision=v["decision"],
                categories=v["categories"],
                purposes=v["purposes"],
                valid_from=v["valid_from"],
                valid_until=v["valid_until"],
                recorded_at=v["recorded_at"],
                status=v["status"],
            )
        )
        for consent in case["consents"]
        for v in consent["versions"]
    ]
    view.store.apply(events)
    question = case["question"]
    decision = view.is_permitted(
        question["patient_id"],
        question["practitioner_id"],
        question["category"],
        question["purpose"],
        at=datetime.fromisoformat(question["at"]),
    )
    assert _answer(decision) == case["expected"], case["description"]
