"""Every id that create accepts works in a path; a malformed id gets a problem that says so."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from consent_service.api.schemas import IDENTIFIER
from tests.integration.api_support import assert_problem, create_consent

# Each character of the id alphabet after a first letter or digit, in the
# places a router could trip on it: next to a slash, doubled, dot segments,
# route words inside the id, the longest id.
ALPHABET_IDS = [
    *(f"p{c}1" for c in "._:@/+-"),
    "ins/123",
    "a/b/c",
    "a//b",
    "a/./b",
    "a/../b",
    "a/",
    "x/export",
    "x/revoke-all",
    "9+/:@_-.Z",
    "L" + "/" * 127,
    "0" + "a/" * 63 + "z",
]


def test_the_ids_are_ones_create_accepts() -> None:
    assert all(IDENTIFIER.fullmatch(value) for value in ALPHABET_IDS)


@pytest.mark.parametrize("identifier", ALPHABET_IDS)
@pytest.mark.parametrize("encode", [True, False], ids=["percent-encoded", "raw"])
def test_export_and_revoke_all_work_for_every_id(
    client: FlaskClient, auth: dict[str, str], identifier: str, encode: bool
) -> None:
    if not encode and ("//" in identifier or "/." in identifier or identifier.endswith("/")):
        pytest.skip("clients normalise such raw paths; only the encoded form is portable")
    created = create_consent(client, auth, patient_id=identifier, practitioner_id=identifier)
    in_path = quote(identifier, safe="") if encode else identifier

    exported = client.get(f"/v1/patients/{in_path}/export", headers=auth)
    assert exported.status_code == 200, exported.get_json()
    body = exported.get_json()
    assert body["patient_id"] == identifier
    assert [consent["id"] for consent in body["consents"]] == [created["id"]]

    revoked = client.post(
        f"/v1/practitioners/{in_path}/revoke-all", json={"reason": "left"}, headers=auth
    )
    assert revoked.status_code == 200, revoked.get_json()
    assert revoked.get_json()["practitioner_id"] == identifier
    assert [item["id"] for item in revoked.get_json()["revoked"]] == [created["id"]]


def test_the_rest_of_the_url_still_routes(client: FlaskClient, auth: dict[str, str]) -> None:
    create_consent(client, auth, patient_id="a/b")
    assert client.get("/v1/patients/a/b/export/extra", headers=auth).status_code == 404
    assert client.get("/v1/patients/a/b/exports", headers=auth).status_code == 404
    assert client.get("/v1/practitioners/a/b/revoke-all", headers=auth).status_code == 405
    assert client.get("/v1/patients//export", headers=auth).status_code == 404
    assert client.get("/v1/patients/a%2Fb/export", headers=auth).get_json()["patient_id"] == "a/b"


def test_an_id_outside_the_alphabet_is_422_naming_the_field(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for bad in ("-leading-dash", "sp ace", "x" * 129, "é"):
        response = client.get(f"/v1/patients/{quote(bad, safe='')}/export", headers=auth)
        assert_problem(response, 422, "patient_id", location="path")


MALFORMED = ["not-a-uuid", "1234", "3fa85f64-5717-4562-b3fc-2c963f66afaZ", "x" * 300, "%00"]


@pytest.mark.parametrize("segment", MALFORMED)
def test_a_malformed_consent_id_is_a_problem_that_says_so(
    client: FlaskClient, auth: dict[str, str], segment: str
) -> None:
    paths = [
        ("GET", f"/v1/consents/{segment}"),
        ("PATCH", f"/v1/consents/{segment}"),
        ("POST", f"/v1/consents/{segment}/revoke"),
        ("GET", f"/v1/consents/{segment}/versions"),
        ("GET", f"/v1/consents/{segment}/versions/1"),
        ("GET", f"/v1/consent-requests/{segment}"),
    ]
    for method, path in paths:
        response = client.open(path, method=method, headers=auth, json={})
        body = assert_problem(response, 404)
        assert "not a UUID" in body["detail"], (method, path, body)


@pytest.mark.parametrize("number", ["abc", "-1", "1.5", "\u0661"])
def test_a_malformed_version_number_is_a_problem_that_says_so(
    client: FlaskClient, auth: dict[str, str], number: str
) -> None:
    response = client.get(f"/v1/consents/{uuid.uuid4()}/versions/{number}", headers=auth)
    body = assert_problem(response, 404)
    assert "number" in body["detail"]


def test_a_well_formed_unknown_id_is_still_a_plain_not_found(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.get(f"/v1/consents/{str(uuid.uuid4()).upper()}", headers=auth)
    body = assert_problem(response, 404)
    assert "not a UUID" not in body.get("detail", "")
