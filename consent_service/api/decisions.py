"""Decisions: "may this practitioner see this data, for this purpose, now?"."""

from __future__ import annotations

from typing import Any

from flask import Response

from consent_service import metrics
from consent_service.api.auth import requires
from consent_service.api.schemas import (
    DecisionBatchResultSchema,
    DecisionBatchSchema,
    DecisionQuestionSchema,
    DecisionSchema,
)
from consent_service.api.writes import json_response
from consent_service.http.context import principal, read_connection
from consent_service.http.parsing import ConsentBlueprint
from consent_service.services.decisions import Question, decide_many
from consent_service.services.rules import Outcome
from consent_service.timefmt import utcnow

blp = ConsentBlueprint("decisions", __name__, url_prefix="/v1", description="Access decisions")


def _answer(outcome: Outcome) -> dict[str, Any]:
    metrics.DECISIONS.labels(outcome.decision).inc()
    return {
        "decision": outcome.decision,
        "consent_id": outcome.consent_id,
        "version": outcome.version,
        "reason": outcome.reason,
    }


def _decide(checks: list[dict[str, Any]]) -> list[Outcome]:
    questions = [Question(**check) for check in checks]
    return decide_many(
        read_connection(),
        organization=principal().organization,
        questions=questions,
        now=utcnow(),
    )


@blp.route("/decisions", methods=["POST"])
@requires("decisions:read")
@blp.arguments(DecisionQuestionSchema)
@blp.response(200, DecisionSchema)
def decide(body: dict[str, Any]) -> Response:
    """Decide one question; the answer names the consent and version that decided."""
    return json_response(_answer(_decide([body])[0]))


@blp.route("/decisions:batch", methods=["POST"])
@requires("decisions:read")
@blp.arguments(DecisionBatchSchema)
@blp.response(200, DecisionBatchResultSchema)
def decide_batch(body: dict[str, Any]) -> Response:
    """Decide up to 500 questions; one answer each, in order."""
    return json_response({"results": [_answer(outcome) for outcome in _decide(body["checks"])]})
