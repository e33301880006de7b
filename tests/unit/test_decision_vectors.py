"""The service's decision rule against the language-neutral vectors in schemas/.

The subscriber kit runs the same file (events/tests/test_kit_vectors.py), so
a change to either rule that the other does not share fails one of the two.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from consent_service.services.rules import decide

VECTORS = Path(__file__).resolve().parents[2] / "schemas" / "decision-vectors.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]


@dataclass
class VectorVersion:
    consent_id: str
    version: int
    status: str
    decision: str
    categories: Sequence[str]
    purposes: Sequence[str]
    valid_from: datetime
    valid_until: datetime | None
    recorded_at: datetime


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _histories(case: dict[str, Any]) -> list[list[VectorVersion]]:
    """The question's pair's consents, as the service's query would select them."""
    question = case["question"]
    return [
        [
            VectorVersion(
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
        if consent["patient_id"] == question["patient_id"]
        and consent["practitioner_id"] == question["practitioner_id"]
    ]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_service_rule_gives_the_expected_answer(case: dict[str, Any]) -> None:
    question = case["question"]
    outcome = decide(
        _histories(case),
        question["category"],
        question["purpose"],
        datetime.fromisoformat(question["at"]),
    )
    answer = {
        "decision": outcome.decision,
        "consent_id": None if outcome.consent_id is None else str(outcome.consent_id),
        "version": outcome.version,
        "reason": outcome.reason,
    }
    assert answer == case["expected"], case["description"]


def test_vectors_are_many_and_uniquely_named() -> None:
    names = [case["name"] for case in CASES]
    assert len(names) >= 25
    assert len(set(names)) == len(names)
