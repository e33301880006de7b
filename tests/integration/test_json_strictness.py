"""Ambiguous JSON is refused (a key twice, on every JSON input); 413 says the limit."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from consent_service.db.session import Database
from tests.conftest import consent_body
from tests.integration.api_support import assert_problem, create_consent, row_counts

QUESTION = (
    '"patient_id": "p-1", "practitioner_id": "r-1", "category": "billing", "purpose": "referral"'
)


def _with_duplicate(body: dict[str, object], key: str, first: object) -> str:
    """``body`` as JSON with ``key`` written twice, ``first`` before the real value."""
    text = json.dumps(body)
    return "{" + f"{json.dumps(key)}: {json.dumps(first)}, " + text[1:]


def _inputs(consent_id: str) -> list[tuple[str, str, str, str]]:
    merge = "application/merge-patch+json"
    plain = "application/json"
    return [
        ("POST", "/v1/consents", _with_duplicate(consent_body(), "decision", "deny"), plain),
        (
            "PATCH",
            f"/v1/consents/{consent_id}",
            '{"decision": "deny", "decision": "permit"}',
            merge,
        ),
        ("POST", f"/v1/consents/{consent_id}/revoke", '{"reason": "a", "reason": null}', plain),
        ("POST", "/v1/practitioners/r-1/revoke-all", '{"reason": "a", "reason": "b"}', plain),
        ("POST", "/v1/decisions", "{" + QUESTION + ', "purpose": "care"}', plain),
        ("POST", "/v1/decisions:batch", '{"checks": [{' + QUESTION + ', "category": "x"}]}', plain),
        ("POST", "/v1/decisions:batch", '{"checks": [], "checks": [{' + QUESTION + "}]}", plain),
        ("POST", "/v1/consent-requests", '{"patient_id": "a", "patient_id": "b"}', plain),
    ]


def test_a_duplicate_key_is_400_on_every_json_input(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    consent = create_consent(client, auth)
    before = row_counts(database)
    for method, path, body, mimetype in _inputs(consent["id"]):
        headers = {**auth, "Content-Type": mimetype, "If-Match": '"1"'}
        response = client.open(path, method=method, data=body, headers=headers)
        problem = assert_problem(response, 400)
        assert "appears twice" in problem["detail"], (path, problem)
    assert row_counts(database) == before


@pytest.mark.parametrize("body", ['{"a": {"b": 1, "b": 2}}', '[{"x": 1, "x": 1}]'])
def test_duplicates_are_found_at_any_depth(
    client: FlaskClient, auth: dict[str, str], body: str
) -> None:
    response = client.post(
        "/v1/consents", data=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)


def test_413_states_the_limit(client: FlaskClient, auth: dict[str, str]) -> None:
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    response = client.post(
        "/v1/consents",
        data=b"{" + b" " * limit + b"}",
        headers={**auth, "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 413)
    assert f"{limit} bytes" in problem["detail"]
