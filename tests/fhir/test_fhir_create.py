"""Recording consents with POST /fhir/r4/Consent: the mapping back, refusals, idempotency, audit."""

from __future__ import annotations

import copy
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from consent_service.config import DEFAULT_CATEGORIES, DEFAULT_PURPOSES
from consent_service.db.audit_models import AuditEntry
from consent_service.db.session import Database
from consent_service.fhir.terminology import RPPS_SYSTEM
from tests.conftest import consent_body
from tests.fhir.conftest import assert_valid_r4, fhir_get, fhir_post, outcome_paths

BASE = "http://localhost/fhir/r4"
AMENDABLE = (
    "patient_id",
    "practitioner_id",
    "categories",
    "purposes",
    "decision",
    "valid_from",
    "valid_until",
    "collection",
    "organization",
    "status",
)


def posted_consent(**provision: Any) -> dict[str, Any]:
    """A minimal Consent as a FHIR client would write it."""
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/pat-fhir-1"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"identifier": {"system": RPPS_SYSTEM, "value": "10003456789"}},
                }
            ],
            "purpose": [{"system": f"{BASE}/CodeSystem/purpose", "code": "referral"}],
            "code": [
                {"coding": [{"system": f"{BASE}/CodeSystem/data-category", "code": "radiographs"}]}
            ],
            **provision,
        },
    }
    return resource


def test_a_posted_consent_is_recorded_like_a_v1_one(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    response = fhir_post(client, posted_consent(), auth)
    assert response.status_code == 201, response.data
    created = response.get_json()
    assert_valid_r4(created)
    assert response.headers["Location"] == f"{BASE}/Consent/{created['id']}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'
    v1 = client.get(f"/v1/consents/{created['id']}", headers=auth).get_json()
    assert (v1["patient_id"], v1["practitioner_id"]) == ("pat-fhir-1", "rpps:10003456789")
    assert (v1["categories"], v1["purposes"], v1["decision"]) == (
        ["radiographs"],
        ["referral"],
        "permit",
    )
    assert v1["collection"] == {
        "method": "partner-api",
        "evidence_ref": None,
        "policy_version": None,
    }
    events = client.get("/v1/events?after=0", headers=auth).get_json()["items"]
    assert [e["type"] for e in events if e["subject"] == created["id"]] == ["consent.granted"]
    with database.reading() as session:
        actions = session.scalars(select(AuditEntry.action)).all()
    assert "consent.granted" in actions


def test_a_standard_purpose_code_alone_stands_for_the_service_code(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    resource = posted_consent(
        purpose=[{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT"}]
    )
    response = fhir_post(client, resource, auth)
    assert response.status_code == 201, response.data
    v1 = client.get(f"/v1/consents/{response.get_json()['id']}", headers=auth).get_json()
    assert v1["purposes"] == ["emergency"]


def test_what_the_service_cannot_hold_is_refused_not_dropped(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    cases: list[tuple[dict[str, Any], str]] = []
    nested = posted_consent(provision=[{"type": "deny"}])
    cases.append((nested, "Consent.provision.provision"))
    cases.append(
        (
            posted_consent(
                data=[{"meaning": "instance", "reference": {"reference": "Observation/1"}}]
            ),
            "Consent.provision.data",
        )
    )
    performer = posted_consent()
    performer["performer"] = [{"reference": "Patient/pat-fhir-1"}]
    cases.append((performer, "Consent.performer"))
    modifier = posted_consent()
    modifier["modifierExtension"] = [{"url": "http://example.org/x", "valueBoolean": True}]
    cases.append((modifier, "Consent.modifierExtension"))
    proposed = posted_consent()
    proposed["status"] = "proposed"
    cases.append((proposed, "Consent.status"))
    two_actors = posted_consent()
    two_actors["provision"]["actor"].append(copy.deepcopy(two_actors["provision"]["actor"][0]))
    cases.append((two_actors, "Consent.provision.actor"))
    foreign_code = posted_consent(code=[{"coding": [{"system": "http://loinc.org", "code": "1"}]}])
    cases.append((foreign_code, "Consent.provision.code[0]"))
    unknown_category = posted_consent(
        code=[{"coding": [{"system": f"{BASE}/CodeSystem/data-category", "code": "genome"}]}]
    )
    cases.append((unknown_category, "Consent.provision.code"))
    other_org = posted_consent()
    other_org["organization"] = [{"reference": "Organization/practice-b"}]
    cases.append((other_org, "Consent.organization[0]"))
    wrong_rule = posted_consent(type="deny")
    cases.append((wrong_rule, "Consent.policyRule"))
    bad_period = posted_consent(
        period={"start": "2027-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    )
    cases.append((bad_period, "Consent.provision.period.end"))
    nir = posted_consent()
    nir["patient"] = {"reference": "Patient/185057800608436"}
    cases.append((nir, "Consent.patient"))
    for resource, path in cases:
        response = fhir_post(client, resource, auth)
        assert response.status_code == 422, (path, response.data)
        assert path in outcome_paths(response), (path, response.get_json())
    assert client.get("/v1/consents", headers=auth).get_json()["items"] == []


def test_malformed_and_hostile_bodies(client: FlaskClient, auth: dict[str, str]) -> None:
    for body in ([], "Consent", {"resourceType": "Patient"}, {"resourceType": "Consent"}):
        response = fhir_post(client, body, auth)
        assert response.status_code in (400, 422), body
        outcome_paths(response)
    broken = client.post(
        "/fhir/r4/Consent", data=b"{", headers={**auth, "Content-Type": "application/fhir+json"}
    )
    assert broken.status_code == 400
    outcome_paths(broken)
    xml = client.post(
        "/fhir/r4/Consent",
        data=b"<Consent/>",
        headers={**auth, "Content-Type": "application/fhir+xml"},
    )
    assert xml.status_code == 415
    outcome_paths(xml)
    huge = posted_consent()
    huge["text"] = {"status": "generated", "div": "<div>" + "x" * 400_000 + "</div>"}
    too_big = fhir_post(client, huge, auth)
    assert too_big.status_code == 413
    outcome_paths(too_big)


def test_idempotency_key_and_if_none_exist(client: FlaskClient, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "fhir-create-1"}
    first = fhir_post(client, posted_consent(), headers)
    again = fhir_post(client, posted_consent(), headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.mimetype == "application/fhir+json"
    changed = fhir_post(client, posted_consent(type="deny"), headers)
    assert changed.status_code == 422

    condition = {**auth, "If-None-Exist": "patient=pat-fhir-1&actor=rpps:10003456789"}
    found = fhir_post(client, posted_consent(), condition)
    assert found.status_code == 200
    assert found.get_json()["id"] == first.get_json()["id"]
    fresh = {**auth, "If-None-Exist": "patient=pat-fhir-2"}
    resource = posted_consent()
    resource["patient"] = {"reference": "Patient/pat-fhir-2"}
    assert fhir_post(client, resource, fresh).status_code == 201
    assert fhir_post(client, resource, fresh).status_code == 200
    assert fhir_post(client, resource, {**auth, "If-None-Exist": "bogus=1"}).status_code == 400


def test_reads_through_fhir_are_audited_like_v1_reads(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()
    assert fhir_get(client, f"/Consent/{created['id']}", auth).status_code == 200
    assert (
        fhir_get(client, "/Consent/00000000-0000-0000-0000-000000000000", auth).status_code == 404
    )
    listed = client.get("/v1/audit", headers=auth).get_json()["items"]
    reads = [(e["action"], e["outcome"], e["objects"].get("consent_id")) for e in listed]
    assert ("consent.read", "ok", created["id"]) in reads
    assert any(action == "consent.read" and outcome == "not-found" for action, outcome, _ in reads)


def _strip_server_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """What a client re-posting a consent read from the server would send."""
    posted = {
        key: value
        for key, value in resource.items()
        if key not in ("id", "meta", "identifier", "dateTime")
    }
    posted["extension"] = [
        ext for ext in posted["extension"] if not ext["url"].endswith("/consent-status")
    ]
    return posted


identifiers = st.from_regex(r"[A-Za-z][A-Za-z0-9._:@/+-]{0,40}", fullmatch=True)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    patient=identifiers,
    practitioner=st.one_of(st.from_regex(r"rpps:[0-9]{11}", fullmatch=True), identifiers),
    categories=st.lists(st.sampled_from(DEFAULT_CATEGORIES), min_size=1, max_size=4, unique=True),
    purposes=st.lists(st.sampled_from(DEFAULT_PURPOSES), min_size=1, max_size=3, unique=True),
    decision=st.sampled_from(["permit", "deny"]),
    until=st.one_of(st.none(), st.just("2031-02-03T04:05:06.000007Z")),
    method=st.sampled_from(["web-form", "paper", "email", "verbal", "partner-api"]),
    evidence=st.one_of(st.none(), st.text("abcdef 0123-", min_size=1, max_size=20)),
    policy=st.one_of(st.none(), st.sampled_from(["2026-01", "v2"])),
)
def test_round_trip_v1_to_fhir_to_v1(
    client: FlaskClient,
    auth: dict[str, str],
    patient: str,
    practitioner: str,
    categories: list[str],
    purposes: list[str],
    decision: str,
    until: str | None,
    method: str,
    evidence: str | None,
    policy: str | None,
) -> None:
    original = client.post(
        "/v1/consents",
        json=consent_body(
            patient_id=patient,
            practitioner_id=practitioner,
            categories=categories,
            purposes=purposes,
            decision=decision,
            valid_until=until,
            collection={"method": method, "evidence_ref": evidence, "policy_version": policy},
        ),
        headers=auth,
    )
    if original.status_code == 422:  # e.g. an id shaped like a social security number
        return
    assert original.status_code == 201, original.data
    first = original.get_json()
    read = fhir_get(client, f"/Consent/{first['id']}", auth).get_json()
    assert_valid_r4(read)
    recreated = fhir_post(client, _strip_server_fields(read), auth)
    assert recreated.status_code == 201, recreated.get_json()
    second = client.get(f"/v1/consents/{recreated.get_json()['id']}", headers=auth).get_json()
    assert {k: second[k] for k in AMENDABLE} == {k: first[k] for k in AMENDABLE}
