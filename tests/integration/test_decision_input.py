"""The plain decision-body check accepts only what the marshmallow schema accepts, alike.

``api.decision_input`` reads decision bodies on the hot path and hands every
body it is not sure of to ``DecisionQuestionSchema`` / ``DecisionBatchSchema``
(which also describe the body in the OpenAPI document). This compares both
on valid, malformed and hostile bodies: the plain check must accept exactly
the bodies the schema accepts (apart from an ``at`` instant, which it always
leaves to the schema), with the same loaded result.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from marshmallow import ValidationError

from consent_service.api.decision_input import plain_batch, plain_question
from consent_service.api.schemas import DecisionBatchSchema, DecisionQuestionSchema

VALID = {
    "patient_id": "pat-1",
    "practitioner_id": "rpps:10003456789",
    "category": "radiographs",
    "purpose": "referral",
}
QUESTIONS: list[Any] = [
    VALID,
    {**VALID, "at": None},
    {**VALID, "at": "2026-01-01T00:00:00+01:00"},
    {**VALID, "at": "not a date"},
    {**VALID, "extra": 1},
    {**VALID, "patient_id": "pat-1\n"},
    {**VALID, "patient_id": "1 85 05 78 006 084 36"},
    {**VALID, "patient_id": "185057800608436"},
    {**VALID, "patient_id": ""},
    {**VALID, "patient_id": "x" * 128},
    {**VALID, "patient_id": "x" * 129},
    {**VALID, "patient_id": "-leading-dash"},
    {**VALID, "patient_id": "a/b+c@d:e.f_g"},
    {**VALID, "patient_id": "pât"},
    {**VALID, "patient_id": 12},
    {**VALID, "patient_id": None},
    {**VALID, "patient_id": ["pat-1"]},
    {**VALID, "practitioner_id": True},
    {**VALID, "category": "RADIOGRAPHS"},
    {**VALID, "category": "radiographs "},
    {**VALID, "category": "x" * 65},
    {**VALID, "category": ["radiographs"]},
    {**VALID, "purpose": "marketing"},
    {**VALID, "purpose": None},
    {key: value for key, value in VALID.items() if key != "purpose"},
    {key: value for key, value in VALID.items() if key != "patient_id"},
    {},
    [],
    [VALID],
    "radiographs",
    7,
    None,
]
BATCHES: list[Any] = [
    {"checks": [VALID]},
    {"checks": [VALID] * 500},
    {"checks": [VALID] * 501},
    {"checks": []},
    {"checks": [VALID, {**VALID, "purpose": "marketing"}]},
    {"checks": [VALID, {**VALID, "at": "2026-01-01T00:00:00Z"}]},
    {"checks": VALID},
    {"checks": [VALID], "extra": True},
    {"checks": None},
    {},
    [VALID],
]


def _schema_load(schema: Any, body: Any) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = schema.load(body)
    except ValidationError:
        return None
    return loaded


def _has_instant(body: Any) -> bool:
    checks = body.get("checks") if isinstance(body, dict) else None
    questions = checks if isinstance(checks, list) else [body]
    return any(isinstance(q, dict) and q.get("at") is not None for q in questions)


@pytest.mark.parametrize("body", QUESTIONS, ids=range(len(QUESTIONS)))
def test_a_question_is_accepted_exactly_when_the_schema_accepts_it(app: Flask, body: Any) -> None:
    settings = app.extensions["consent_service"].settings
    with app.app_context():
        expected = _schema_load(DecisionQuestionSchema(), body)
    plain = plain_question(body, settings)
    if _has_instant(body):
        assert plain is None  # always the schema's to judge
    else:
        assert plain == expected


@pytest.mark.parametrize("body", BATCHES, ids=range(len(BATCHES)))
def test_a_batch_is_accepted_exactly_when_the_schema_accepts_it(app: Flask, body: Any) -> None:
    settings = app.extensions["consent_service"].settings
    with app.app_context():
        expected = _schema_load(DecisionBatchSchema(), body)
    plain = plain_batch(body, settings)
    if _has_instant(body):
        assert plain is None
    else:
        assert plain == expected


def test_the_schema_still_answers_what_the_plain_check_leaves_to_it(
    client: Any, auth: dict[str, str]
) -> None:
    response = client.post("/v1/decisions", json={**VALID, "purpose": "marketing"}, headers=auth)
    assert response.status_code == 422
    assert [error["field"] for error in response.get_json()["errors"]] == ["purpose"]
    fine = client.post("/v1/decisions", json=VALID, headers=auth)
    assert fine.status_code == 200 and fine.get_json()["decision"] == "deny"
