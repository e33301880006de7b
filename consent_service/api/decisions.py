"""Decisions: "may this practitioner see this data, for this purpose, now?"."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from consent_service import metrics
from consent_service.api.decision_input import plain_batch, plain_question
from consent_service.api.schemas import (
    MAX_BATCH,
    DecisionBatchResultSchema,
    DecisionBatchSchema,
    DecisionQuestionSchema,
    DecisionSchema,
)
from consent_service.http.auth import requires
from consent_service.http.context import principal, read_connection, state
from consent_service.http.parsing import ConsentBlueprint, arguments_with_plain_path
from consent_service.http.problems import problem
from consent_service.http.writes import json_response
from consent_service.services.decisions import Question, decide_many
from consent_service.services.rules import Outcome
from consent_service.timefmt import utcnow

blp = ConsentBlueprint("decisions", __name__, url_prefix="/v1", description="Access decisions")


def _answer(outcome: Outcome) -> dict[str, Any]:
    metrics.DECISIONS.labels(outcome.decision).inc()
    answer: dict[str, Any] = {
        "decision": outcome.decision,
        "consent_id": outcome.consent_id,
        "version": outcome.version,
        "reason": outcome.reason,
    }
    if outcome.emergency_access_id is not None:
        answer["emergency_access_id"] = outcome.emergency_access_id
    return answer


def _decide(checks: list[dict[str, Any]]) -> list[Outcome]:
    questions = [Question(**check) for check in checks]
    return decide_many(
        read_connection(),
        organization=principal().organization,
        questions=questions,
        now=utcnow(),
    )


def _asked_for_others(checks: list[dict[str, Any]]) -> Response | None:
    """403 when a practitioner's token asks about another practitioner; None otherwise.

    A practitioner's token acts as that practitioner alone: it may learn what
    it may see itself, not what colleagues may.
    """
    acting = principal().practitioner_id
    if acting is None or all(check["practitioner_id"] == acting for check in checks):
        return None
    return problem(
        403,
        "Forbidden",
        f"This practitioner's token may only ask decisions for `{acting}` itself.",
    )


def _plain_question(raw: Any) -> dict[str, Any] | None:
    return plain_question(raw, state().settings)


def _plain_batch(raw: Any) -> dict[str, Any] | None:
    return plain_batch(raw, state().settings)


@blp.route("/decisions", methods=["POST"])
@requires("decisions:read")
@arguments_with_plain_path(blp, DecisionQuestionSchema, _plain_question)
@blp.response(200, DecisionSchema)
def decide(body: dict[str, Any]) -> Response:
    """Decide one question; the answer names the consent and version that decided."""
    refusal = _asked_for_others([body])
    if refusal is not None:
        return refusal
    return json_response(_answer(_decide([body])[0]))


def _checks_asked() -> int:
    """How many questions a batch asks: what it counts for against the decisions budget."""
    body = request.get_json(silent=True)
    checks = body.get("checks") if isinstance(body, dict) else None
    return min(len(checks), MAX_BATCH) if isinstance(checks, list) and checks else 1


@blp.route("/decisions:batch", methods=["POST"])
@requires("decisions:read", cost=_checks_asked)
@arguments_with_plain_path(blp, DecisionBatchSchema, _plain_batch)
@blp.response(200, DecisionBatchResultSchema)
def decide_batch(body: dict[str, Any]) -> Response:
    """Decide up to 500 questions; one answer each, in order."""
    refusal = _asked_for_others(body["checks"])
    if refusal is not None:
        return refusal
    return json_response({"results": [_answer(outcome) for outcome in _decide(body["checks"])]})
