"""Reading, versions, search and export through /fhir/r4, against consents recorded on /v1."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask.testing import FlaskClient

from consent_service.fhir.terminology import RPPS_SYSTEM
from tests.conftest import KeyFactory, consent_body
from tests.fhir.conftest import assert_valid_r4, fhir_get, outcome_paths


def _create(client: FlaskClient, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/consents", json=consent_body(**overrides), headers=auth)
    assert response.status_code == 201, response.data
    body: dict[str, Any] = response.get_json()
    return body


def test_metadata_is_a_valid_capability_statement_without_a_key(client: FlaskClient) -> None:
    response = fhir_get(client, "/metadata")
    assert response.status_code == 200
    assert response.mimetype == "application/fhir+json"
    statement = response.get_json()
    assert_valid_r4(statement)
    assert statement["fhirVersion"] == "4.0.1"
    consent = statement["rest"][0]["resource"][0]
    assert {i["code"] for i in consent["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "search-type",
        "create",
    }
    assert "/v1/consents/{id}/revoke" in statement["rest"][0]["documentation"]


def test_code_systems_list_the_configured_vocabularies(client: FlaskClient) -> None:
    for name, expected in (("data-category", "radiographs"), ("purpose", "referral")):
        response = fhir_get(client, f"/CodeSystem/{name}")
        assert response.status_code == 200
        code_system = response.get_json()
        assert_valid_r4(code_system)
        assert expected in [concept["code"] for concept in code_system["concept"]]
        assert code_system["url"].endswith(f"/fhir/r4/CodeSystem/{name}")
    unknown = fhir_get(client, "/CodeSystem/nope")
    assert unknown.status_code == 404
    outcome_paths(unknown)


def test_a_v1_consent_reads_as_fhir_with_every_field_mapped(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = _create(
        client,
        auth,
        patient_id="pat-77",
        valid_until="2030-01-01T00:00:00Z",
        purposes=["care-coordination", "referral"],
    )
    response = fhir_get(client, f"/Consent/{created['id']}", auth)
    assert response.status_code == 200
    assert response.headers["ETag"] == 'W/"1"'
    assert "GMT" in response.headers["Last-Modified"]
    assert response.headers["Cache-Control"] == "no-store"
    resource = response.get_json()
    assert_valid_r4(resource)
    assert resource["id"] == created["id"]
    assert resource["meta"]["versionId"] == "1"
    assert resource["status"] == "active"
    assert resource["patient"]["reference"] == "Patient/pat-77"
    assert resource["organization"][0]["reference"] == "Organization/practice-a"
    provision = resource["provision"]
    assert provision["type"] == "permit"
    assert provision["period"] == {
        "start": created["valid_from"],
        "end": "2030-01-01T00:00:00.000000Z",
    }
    assert provision["actor"][0]["reference"]["identifier"] == {
        "system": RPPS_SYSTEM,
        "value": "10003456789",
    }
    own = [c["code"] for c in provision["purpose"] if c["system"].endswith("CodeSystem/purpose")]
    assert own == ["care-coordination", "referral"]
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
        "code": "TREAT",
        "display": "treatment",
    } in provision["purpose"]
    assert [c["coding"][0]["code"] for c in provision["code"]] == ["dental-chart", "radiographs"]
    assert resource["policy"] == [{"uri": resource["policy"][0]["uri"]}]
    assert resource["policy"][0]["uri"].endswith("/policy/2026-01")
    assert resource["sourceAttachment"] == {"title": "scan-42"}


def test_ids_that_are_not_fhir_ids_travel_as_identifiers(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = _create(client, auth, patient_id="ins/123:a", practitioner_id="local:dr-who")
    resource = fhir_get(client, f"/Consent/{created['id']}", auth).get_json()
    assert_valid_r4(resource)
    assert "reference" not in resource["patient"]
    assert resource["patient"]["identifier"]["value"] == "ins/123:a"
    actor = resource["provision"]["actor"][0]["reference"]["identifier"]
    assert actor["value"] == "local:dr-who"
    assert actor["system"].endswith("/NamingSystem/practitioner-id")


def test_versions_history_and_revocation(client: FlaskClient, auth: dict[str, str]) -> None:
    created = _create(client, auth)
    amended = client.patch(
        f"/v1/consents/{created['id']}",
        json={"categories": ["radiographs"]},
        headers={**auth, "If-Match": '"1"'},
    )
    assert amended.status_code == 200
    revoked = client.post(
        f"/v1/consents/{created['id']}/revoke", json={"reason": "withdrawn"}, headers=auth
    )
    assert revoked.status_code == 200

    current = fhir_get(client, f"/Consent/{created['id']}", auth).get_json()
    assert current["status"] == "inactive"
    assert current["meta"]["versionId"] == "3"
    first = fhir_get(client, f"/Consent/{created['id']}/_history/1", auth)
    assert first.status_code == 200 and first.headers["ETag"] == 'W/"1"'
    assert len(first.get_json()["provision"]["code"]) == 2
    history = fhir_get(client, f"/Consent/{created['id']}/_history", auth).get_json()
    assert_valid_r4(history)
    assert history["type"] == "history" and history["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert fhir_get(client, f"/Consent/{created['id']}/_history/4", auth).status_code == 404


def test_search_filters_and_pages(client: FlaskClient, auth: dict[str, str]) -> None:
    ids = {_create(client, auth, patient_id="pat-search")["id"] for _ in range(5)}
    other = _create(client, auth, patient_id="pat-search", practitioner_id="rpps:999")
    client.post(f"/v1/consents/{other['id']}/revoke", json={"reason": "left"}, headers=auth)
    _create(client, auth, patient_id="pat-elsewhere")

    seen: list[str] = []
    url = "/Consent?patient=Patient/pat-search&status=active&_count=2"
    while url:
        page = fhir_get(client, url, auth)
        assert page.status_code == 200, page.data
        bundle = page.get_json()
        assert_valid_r4(bundle)
        assert bundle["type"] == "searchset"
        seen += [entry["resource"]["id"] for entry in bundle["entry"]]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        url = links["next"].split("/fhir/r4", 1)[1] if "next" in links else ""
    assert sorted(seen) == sorted(ids)

    by_actor = fhir_get(client, f"/Consent?actor={quote(RPPS_SYSTEM)}|999", auth).get_json()
    assert [e["resource"]["id"] for e in by_actor["entry"]] == [other["id"]]
    inactive = fhir_get(client, "/Consent?patient=pat-search&status=inactive", auth).get_json()
    assert [e["resource"]["id"] for e in inactive["entry"]] == [other["id"]]
    later = fhir_get(client, "/Consent?_lastUpdated=gt2100-01-01T00:00:00Z", auth).get_json()
    assert later["entry"] == []
    earlier = fhir_get(
        client, "/Consent?patient=pat-search&_lastUpdated=le2100-01-01T00:00:00Z", auth
    )
    assert len(earlier.get_json()["entry"]) == 6


def test_bad_search_parameters_are_refused_with_an_operation_outcome(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for query in (
        "name=x",
        "_count=0",
        "_count=101",
        "_count=abc",
        "status=revoked",
        "_lastUpdated=yesterday",
        "_lastUpdated=ge2026-01-01T00:00:00",
        "patient=Jean%20Dupont",
        "actor=http://example.org|1",
        "_page=not-a-page",
    ):
        response = fhir_get(client, f"/Consent?{query}", auth)
        assert response.status_code == 400, query
        outcome_paths(response)


def test_export_matches_the_v1_export(client: FlaskClient, auth: dict[str, str]) -> None:
    first = _create(client, auth, patient_id="pat-export")
    _create(client, auth, patient_id="pat-export", practitioner_id="rpps:12")
    client.post(f"/v1/consents/{first['id']}/revoke", json={"reason": "x"}, headers=auth)
    v1 = client.get("/v1/patients/pat-export/export", headers=auth).get_json()
    response = fhir_get(client, "/Patient/pat-export/$consent-export", auth)
    assert response.status_code == 200
    exported = response.get_json()
    assert_valid_r4(exported)
    assert exported["type"] == "collection"
    v1_versions = sorted(
        (consent["id"], version["version"])
        for consent in v1["consents"]
        for version in consent["versions"]
    )
    fhir_versions = sorted(
        (e["resource"]["id"], int(e["resource"]["meta"]["versionId"])) for e in exported["entry"]
    )
    assert fhir_versions == v1_versions


def test_keys_scopes_and_organizations_apply(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory
) -> None:
    created = _create(client, auth)
    unauthenticated = fhir_get(client, f"/Consent/{created['id']}")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    outcome_paths(unauthenticated)
    no_scope = fhir_get(client, f"/Consent/{created['id']}", api_key(scopes=("decisions:read",)))
    assert no_scope.status_code == 403
    outcome_paths(no_scope)
    other_org = api_key(org="practice-b")
    assert fhir_get(client, f"/Consent/{created['id']}", other_org).status_code == 404
    search = fhir_get(client, f"/Consent?patient={created['patient_id']}", other_org)
    assert search.get_json()["entry"] == []


def test_malformed_ids_methods_and_formats_answer_fhir(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for path in ("/Consent/not-a-uuid", "/Consent/1/_history/x", "/Nothing"):
        response = fhir_get(client, path, auth)
        assert response.status_code == 404, path
        outcome_paths(response)
    created = _create(client, auth)
    deleted = client.delete(f"/fhir/r4/Consent/{created['id']}", headers=auth)
    assert deleted.status_code == 405
    outcome_paths(deleted)
    xml = fhir_get(client, f"/Consent/{created['id']}", {**auth, "Accept": "application/fhir+xml"})
    assert xml.status_code == 406
    outcome_paths(xml)
    assert fhir_get(client, "/metadata?_format=json").status_code == 200
