"""Contract and rule of POST /v1/decisions and /v1/decisions:batch, through the API.

The instants a version was recorded come from the answers of the writes, so
the ``at`` cases test the real recording path, not hand-made rows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from consent_service.db.session import Database
from consent_service.services.consents import expire_consent
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory
from tests.integration.api_support import (
    amend,
    assert_problem,
    create_consent,
    days_ago,
    parse_instant,
    revoke,
    wire,
)

PATIENT = "pat-decide-1"
PRACTITIONER = "rpps:10003456789"
MICRO = timedelta(microseconds=1)


def ask(
    client: FlaskClient,
    headers: dict[str, str],
    at: str | None = None,
    **overrides: str,
) -> dict[str, Any]:
    question = {
        "patient_id": PATIENT,
        "practitioner_id": PRACTITIONER,
        "category": "dental-chart",
        "purpose": "care-coordination",
        **overrides,
    }
    if at is not None:
        question["at"] = at
    response = client.post("/v1/decisions", json=question, headers=headers)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"decision", "consent_id", "version", "reason"}
    return body


def record(client: FlaskClient, headers: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return create_consent(
        client, headers, **{"patient_id": PATIENT, "practitioner_id": PRACTITIONER, **overrides}
    )


def permits(answer: dict[str, Any], consent: dict[str, Any], version: int = 1) -> bool:
    return answer == {
        "decision": "permit",
        "consent_id": consent["id"],
        "version": version,
        "reason": "permitted-by-consent",
    }


NO_CONSENT = {"decision": "deny", "consent_id": None, "version": None, "reason": "no-consent"}


def test_no_consent_is_deny(client: FlaskClient, auth: dict[str, str]) -> None:
    assert ask(client, auth) == NO_CONSENT
    assert ask(client, auth, at="2020-01-01T00:00:00Z") == NO_CONSENT


def test_permit_names_consent_and_version(client: FlaskClient, auth: dict[str, str]) -> None:
    consent = record(client, auth)
    assert permits(ask(client, auth), consent)
    amended = amend(client, auth, consent, purposes=["care-coordination", "referral"])
    assert permits(ask(client, auth), consent, version=2)
    assert permits(ask(client, auth, purpose="referral"), amended, version=2)


def test_deny_beats_permit_whatever_the_order(client: FlaskClient, auth: dict[str, str]) -> None:
    refusal = record(client, auth, decision="deny", categories=["dental-chart"])
    record(client, auth, decision="permit")
    record(client, auth, decision="permit")
    answer = ask(client, auth)
    assert answer == {
        "decision": "deny",
        "consent_id": refusal["id"],
        "version": 1,
        "reason": "denied-by-consent",
    }
    # The deny covers dental-chart only: radiographs stay permitted.
    assert ask(client, auth, category="radiographs")["decision"] == "permit"


def test_category_purpose_patient_practitioner_and_organization_must_match(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory
) -> None:
    consent = record(client, auth, categories=["dental-chart", "radiographs"])
    assert permits(ask(client, auth, category="radiographs"), consent)
    assert ask(client, auth, category="billing") == NO_CONSENT
    assert ask(client, auth, purpose="referral") == NO_CONSENT
    assert ask(client, auth, patient_id="pat-other") == NO_CONSENT
    assert ask(client, auth, practitioner_id="rpps:1") == NO_CONSENT
    assert ask(client, api_key(org="practice-b", scopes=("decisions:read",))) == NO_CONSENT


def test_valid_from_inclusive_valid_until_exclusive(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    start, end = days_ago(20), days_ago(10)
    consent = record(client, auth, valid_from=wire(start), valid_until=wire(end))
    assert ask(client, auth, at=wire(start - MICRO)) == NO_CONSENT
    assert permits(ask(client, auth, at=wire(start)), consent)
    assert permits(ask(client, auth, at=wire(end - MICRO)), consent)
    assert ask(client, auth, at=wire(end)) == NO_CONSENT
    assert ask(client, auth) == NO_CONSENT  # now is past valid_until


def test_future_consent_does_not_count_yet(client: FlaskClient, auth: dict[str, str]) -> None:
    start = utcnow() + timedelta(days=3)
    consent = record(client, auth, valid_from=wire(start))
    assert ask(client, auth) == NO_CONSENT
    assert permits(ask(client, auth, at=wire(start)), consent)


def test_paper_form_entered_later_counts_from_valid_from(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    signed = days_ago(30)
    consent = record(client, auth, valid_from=wire(signed))
    recorded = parse_instant(consent["recorded_at"])
    assert recorded > signed
    # Instants before version 1 was recorded use version 1.
    assert permits(ask(client, auth, at=wire(signed)), consent)
    assert permits(ask(client, auth, at=wire(days_ago(15))), consent)
    assert ask(client, auth, at=wire(signed - MICRO)) == NO_CONSENT


def test_revocation_counts_from_the_moment_it_was_recorded(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    consent = record(client, auth, valid_from=wire(days_ago(30)))
    revoked = revoke(client, auth, consent["id"])
    revoked_at = parse_instant(revoked["recorded_at"])

    assert permits(ask(client, auth, at=wire(days_ago(10))), consent)
    assert permits(ask(client, auth, at=wire(revoked_at - MICRO)), consent)
    assert ask(client, auth, at=wire(revoked_at)) == NO_CONSENT
    assert ask(client, auth) == NO_CONSENT


def test_valid_until_before_revocation_ends_it_first(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    end = days_ago(5)
    consent = record(client, auth, valid_from=wire(days_ago(30)), valid_until=wire(end))
    revoke(client, auth, consent["id"])
    assert permits(ask(client, auth, at=wire(end - MICRO)), consent)
    assert ask(client, auth, at=wire(end)) == NO_CONSENT
    assert ask(client, auth, at=wire(days_ago(1))) == NO_CONSENT


def test_amendment_applies_from_when_it_was_recorded(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    first = record(client, auth, valid_from=wire(days_ago(30)), categories=["dental-chart"])
    second = amend(client, auth, first, decision="deny", categories=["dental-chart", "billing"])
    t1, t2 = parse_instant(first["recorded_at"]), parse_instant(second["recorded_at"])
    assert t2 - t1 >= 2 * MICRO
    between = t1 + (t2 - t1) / 2

    # Earlier instants, even before version 1 was recorded, use version 1.
    for at in (days_ago(20), t1, between, t2 - MICRO):
        assert permits(ask(client, auth, at=wire(at)), first), at
        assert ask(client, auth, at=wire(at), category="billing") == NO_CONSENT
    refusal = {"decision": "deny", "consent_id": first["id"], "version": 2}
    for instant in (wire(t2), None):
        assert ask(client, auth, at=instant) == {**refusal, "reason": "denied-by-consent"}
        assert ask(client, auth, at=instant, category="billing")["version"] == 2


def test_amended_validity_is_read_from_the_version_in_force(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    first = record(client, auth, valid_from=wire(days_ago(30)))
    # Shortened afterwards: instants before the amendment was recorded keep the old window.
    second = amend(client, auth, first, valid_until=wire(days_ago(20)))
    t2 = parse_instant(second["recorded_at"])
    assert permits(ask(client, auth, at=wire(days_ago(10))), first)
    assert permits(ask(client, auth, at=wire(t2 - MICRO)), first)
    assert ask(client, auth, at=wire(t2)) == NO_CONSENT
    assert ask(client, auth) == NO_CONSENT


def test_expiry_counts_from_when_it_was_recorded(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    end = days_ago(2)
    consent = record(client, auth, valid_from=wire(days_ago(30)), valid_until=wire(end))
    with database.transaction() as session:
        expired = expire_consent(
            session, consent_id=consent["id"], expected_version=1, now=utcnow()
        )
    assert expired is not None and expired["status"] == "expired"
    assert permits(ask(client, auth, at=wire(days_ago(3))), consent)
    assert ask(client, auth, at=wire(end)) == NO_CONSENT
    assert ask(client, auth) == NO_CONSENT
    history = client.get(f"/v1/consents/{consent['id']}/versions", headers=auth).get_json()
    assert [v["change"] for v in history] == ["granted", "expired"]
    assert history[1]["actor"] == "system:expiry"


def test_now_and_explicit_at_agree(client: FlaskClient, auth: dict[str, str]) -> None:
    consent = record(client, auth, valid_from=wire(days_ago(1)))
    amended = amend(client, auth, consent, decision="deny")
    assert ask(client, auth) == ask(client, auth, at=wire(utcnow()))
    assert ask(client, auth)["version"] == amended["version"]


def test_decision_validation(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"patient_id": PATIENT, "practitioner_id": PRACTITIONER}
    problem = assert_problem(
        client.post(
            "/v1/decisions",
            json={**body, "category": "x-rays", "at": "tomorrow"},
            headers=auth,
        ),
        422,
        "category",
        "purpose",
        "at",
    )
    assert len(problem["errors"]) == 3


def _check(i: int) -> dict[str, str]:
    return {
        "patient_id": f"pat-{i % 4}",
        "practitioner_id": PRACTITIONER,
        "category": ("dental-chart", "billing")[i % 2],
        "purpose": "care-coordination",
    }


def test_batch_answers_in_order_like_single_decisions(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    consents = {
        i: create_consent(client, auth, patient_id=f"pat-{i}", practitioner_id=PRACTITIONER)
        for i in (0, 1)
    }
    create_consent(client, auth, patient_id="pat-2", practitioner_id=PRACTITIONER, decision="deny")
    checks = [_check(i) for i in range(12)]
    checks.append({**_check(0), "at": "2001-01-01T00:00:00Z"})
    response = client.post("/v1/decisions:batch", json={"checks": checks}, headers=auth)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert len(results) == len(checks)
    for check, result in zip(checks, results, strict=True):
        single = client.post("/v1/decisions", json=check, headers=auth).get_json()
        assert result == single
    assert results[0]["consent_id"] == consents[0]["id"]
    assert results[1] == NO_CONSENT  # billing is not covered
    assert results[2]["decision"] == "deny" and results[2]["reason"] == "denied-by-consent"
    assert results[3] == NO_CONSENT  # pat-3 has no consent
    assert results[12] == NO_CONSENT  # before valid_from


def test_batch_size_limits(client: FlaskClient, auth: dict[str, str]) -> None:
    full = client.post(
        "/v1/decisions:batch", json={"checks": [_check(i) for i in range(500)]}, headers=auth
    )
    assert full.status_code == 200
    assert len(full.get_json()["results"]) == 500
    too_many = client.post(
        "/v1/decisions:batch", json={"checks": [_check(i) for i in range(501)]}, headers=auth
    )
    assert_problem(too_many, 422, "checks")
    assert_problem(client.post("/v1/decisions:batch", json={"checks": []}, headers=auth), 422)
    assert_problem(client.post("/v1/decisions:batch", json={}, headers=auth), 422, "checks")


@pytest.mark.parametrize("bad", [{"category": "x-rays"}, {"at": "2026-02-30T00:00:00Z"}])
def test_batch_names_the_bad_check(
    client: FlaskClient, auth: dict[str, str], bad: dict[str, str]
) -> None:
    checks = [_check(i) for i in range(5)]
    checks[3] = {**checks[3], **bad}
    response = client.post("/v1/decisions:batch", json={"checks": checks}, headers=auth)
    (field,) = bad
    assert_problem(response, 422, f"checks.3.{field}")
