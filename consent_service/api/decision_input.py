"""A plain-Python reading of decision bodies, for the hot path.

marshmallow through webargs cost a decision about as much as its query
(a load of a few fields is ~50 µs; these checks are a few µs). The checks
here are the ones ``schemas.DecisionQuestionSchema`` makes, and they only
ever *accept*: a body they are not sure of (a wrong type, an unknown or
missing field, an invalid value, an ``at`` instant to parse) goes to the
marshmallow schema, which answers exactly as before, with its per-field
errors. The schema stays the single description of the body and of the
OpenAPI document; ``tests/integration/test_decision_input.py`` checks on a
corpus of valid, malformed and hostile bodies that every body accepted here
is accepted by the schema with the same result.
"""

from __future__ import annotations

from typing import Any

from consent_service.config import Settings
from consent_service.services.identifiers import IDENTIFIER, NIR_LIKE

QUESTION_FIELDS = frozenset({"patient_id", "practitioner_id", "category", "purpose", "at"})
MAX_WORD = 64
MAX_CHECKS = 500


def plain_question(raw: Any, settings: Settings) -> dict[str, Any] | None:
    """The loaded question when ``raw`` is surely valid; None when the schema must judge it."""
    if type(raw) is not dict or not raw.keys() <= QUESTION_FIELDS or raw.get("at") is not None:
        return None
    patient_id = raw.get("patient_id")
    practitioner_id = raw.get("practitioner_id")
    category = raw.get("category")
    purpose = raw.get("purpose")
    if not (_identifier(patient_id) and _identifier(practitioner_id)):
        return None
    if not (_word(category, settings.categories) and _word(purpose, settings.purposes)):
        return None
    return {
        "patient_id": patient_id,
        "practitioner_id": practitioner_id,
        "category": category,
        "purpose": purpose,
        "at": None,
    }


def plain_batch(raw: Any, settings: Settings) -> dict[str, Any] | None:
    """The loaded batch when every question is surely valid; None when the schema must judge."""
    if type(raw) is not dict or raw.keys() != {"checks"}:
        return None
    checks = raw["checks"]
    if type(checks) is not list or not 1 <= len(checks) <= MAX_CHECKS:
        return None
    loaded = []
    for check in checks:
        question = plain_question(check, settings)
        if question is None:
            return None
        loaded.append(question)
    return {"checks": loaded}


def _identifier(value: Any) -> bool:
    return (
        type(value) is str
        and IDENTIFIER.fullmatch(value) is not None
        and NIR_LIKE.match(value) is None
    )


def _word(value: Any, vocabulary: tuple[str, ...]) -> bool:
    return type(value) is str and len(value) <= MAX_WORD and value in vocabulary
