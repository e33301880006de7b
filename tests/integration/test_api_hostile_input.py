"""Hostile input: every malformed request gets a 4xx problem and stores nothing.

A 500, a stack trace or a stored row for any of these inputs is a bug.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
from flask.testing import FlaskClient

from consent_service.db.session import Database
from tests.conftest import consent_body
from tests.integration.api_support import EMPTY, assert_problem, create_consent, row_counts

FIXED_PATIENT = "pat-hostile-1"
T = TypeVar("T")


def _body(**overrides: Any) -> str:
    return json.dumps(consent_body(**{"patient_id": FIXED_PATIENT, **overrides}))


WRONG_TYPES: list[tuple[dict[str, Any], str]] = [
    ({"patient_id": 123}, "patient_id"),
    ({"patient_id": None}, "patient_id"),
    ({"practitioner_id": ["rpps:1"]}, "practitioner_id"),
    ({"categories": "dental-chart"}, "categories"),
    ({"categories": [True]}, "categories.0"),
    ({"categories": [["dental-chart"]]}, "categories.0"),
    ({"categories": []}, "categories"),
    ({"categories": ["dental-chart"] * 33}, "categories"),
    ({"categories": ["x-rays"]}, "categories.0"),
    ({"purposes": [None]}, "purposes.0"),
    ({"purposes": ["marketing"]}, "purposes.0"),
    ({"decision": "maybe"}, "decision"),
    ({"decision": True}, "decision"),
    ({"decision": "PERMIT"}, "decision"),
    ({"collection": "paper"}, "collection._schema"),
    ({"collection": {"method": "fax"}}, "collection.method"),
    ({"collection": {"method": "paper", "extra": 1}}, "collection.extra"),
    ({"collection": {}}, "collection.method"),
    ({"reason": 5}, "reason"),
    ({"valid_from": 1767225600}, "valid_from"),
]


def test_wrong_types_are_422_per_field(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    def check(case: tuple[dict[str, Any], str]) -> None:
        overrides, field = case
        response = client.post("/v1/consents", data=_body(**overrides), headers=_json(auth))
        assert_problem(response, 422, field, location="body")

    each(WRONG_TYPES, check)
    assert row_counts(database) == EMPTY


def test_every_bad_field_is_listed(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    body = {"patient_id": "", "categories": "x", "decision": 1, "bogus": True}
    problem = assert_problem(
        client.post("/v1/consents", json=body, headers=auth),
        422,
        "patient_id",
        "practitioner_id",
        "categories",
        "purposes",
        "decision",
        "collection",
        "bogus",
    )
    assert len(problem["errors"]) == 7
    assert row_counts(database) == EMPTY


BAD_DATES = [
    "2026-02-30T00:00:00Z",  # no such day
    "2026-13-01T00:00:00Z",
    "2026-01-01T25:00:00Z",
    "2026-01-01",  # a date, not an instant
    "2026-01-01T00:00:00",  # no offset
    "2026-01-01T00:00:00+24:00",
    "yesterday",
    "",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # overflows on conversion to UTC
    "1899-12-31T23:59:59Z",  # before 1900
    "9999-12-31T23:59:59Z",  # after 9000
    "2026-01-01T00:00:00Z" + " " * 40,  # too long
    "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",  # Arabic-Indic digits
]


@pytest.mark.parametrize("field", ["valid_from", "valid_until"])
def test_bad_dates_are_422(
    client: FlaskClient, auth: dict[str, str], database: Database, field: str
) -> None:
    def check(value: str) -> None:
        response = client.post("/v1/consents", data=_body(**{field: value}), headers=_json(auth))
        assert_problem(response, 422, field)

    each(BAD_DATES, check)
    assert row_counts(database) == EMPTY


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),  # empty interval
        ("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z"),  # same instant, other offset
    ],
)
def test_valid_until_not_after_valid_from_is_422(
    client: FlaskClient, auth: dict[str, str], database: Database, start: str, end: str
) -> None:
    response = client.post(
        "/v1/consents", data=_body(valid_from=start, valid_until=end), headers=_json(auth)
    )
    assert_problem(response, 422, "valid_until")
    assert row_counts(database) == EMPTY


def test_valid_until_in_the_past_without_valid_from_is_422(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    # valid_from defaults to now, so an end already past is an empty interval.
    response = client.post(
        "/v1/consents", data=_body(valid_until="2001-01-01T00:00:00Z"), headers=_json(auth)
    )
    assert_problem(response, 422, "valid_until")
    assert row_counts(database) == EMPTY


HOSTILE_STRINGS = [
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "a\x00b",  # NUL
    "pat-1\n",  # a final newline (`$` in a regex match lets it through)
    "\x07bell",
    "\u202eevil",  # right-to-left override
    "Jean Dupont",  # a name, with a space
    "é",
    "\U0001f600",
    "",
    " leading",
    "x" * 129,
    "-dash-first",
    "../../etc/passwd",
    "1 85 05 78 006 084 36",  # NIR with spaces
    "185057800608436",  # NIR-like, 15 digits
    "2850578006084",  # NIR-like, 13 digits
]


@pytest.mark.parametrize("field", ["patient_id", "practitioner_id"])
def test_hostile_identifiers_are_422(
    client: FlaskClient, auth: dict[str, str], database: Database, field: str
) -> None:
    def check(value: str) -> None:
        body = consent_body(patient_id=FIXED_PATIENT)
        body[field] = value
        # ensure_ascii keeps lone surrogates as \ud800 escapes, as a hostile client would send.
        response = client.post("/v1/consents", data=json.dumps(body), headers=_json(auth))
        assert_problem(response, 422, field)

    each(HOSTILE_STRINGS, check)
    assert row_counts(database) == EMPTY


@pytest.mark.parametrize("field", ["reason", "collection.evidence_ref"])
def test_control_and_unassigned_characters_in_text_are_422(
    client: FlaskClient, auth: dict[str, str], database: Database, field: str
) -> None:
    def check(value: str) -> None:
        if field == "reason":
            body = _body(reason=value)
        else:
            body = _body(collection={"method": "paper", "evidence_ref": value})
        assert_problem(client.post("/v1/consents", data=body, headers=_json(auth)), 422, field)

    each(["a\x00b", "\ud800", "\x1b[31m", "\ufdd0", "\U0010ffff"], check)
    assert row_counts(database) == EMPTY


def test_unicode_text_round_trips_on_both_backends(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    reason = "Patiente d\u2019accord \u2014 «oui» ✓ 患者 \U0001f600\tligne\nsuivante"
    created = create_consent(client, auth, reason=reason)
    assert created["reason"] == reason
    assert client.get(f"/v1/consents/{created['id']}", headers=auth).get_json()["reason"] == reason


def test_huge_strings_are_refused(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    assert_problem(
        client.post("/v1/consents", data=_body(reason="x" * 501), headers=_json(auth)),
        422,
        "reason",
    )
    assert_problem(
        client.post(
            "/v1/consents",
            data=_body(collection={"method": "paper", "policy_version": "v" * 65}),
            headers=_json(auth),
        ),
        422,
        "collection.policy_version",
    )
    assert_problem(
        client.post("/v1/consents", data=_body(categories=["a" * 10_000]), headers=_json(auth)),
        422,
        "categories.0",
    )
    assert row_counts(database) == EMPTY


def test_oversized_body_is_413(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    response = client.post("/v1/consents", data=_body(reason="x" * 300_000), headers=_json(auth))
    assert_problem(response, 413)
    assert row_counts(database) == EMPTY


MALFORMED_BODIES = [
    "[" * 100_000 + "]" * 100_000,  # deep arrays
    '{"a":' * 20_000 + "1" + "}" * 20_000,  # deep objects
    '{"patient_id": ',  # truncated
    "{'patient_id': 'single quotes'}",
    _body()[:-1] + ', "n": ' + "9" * 5000 + "}",  # integer past Python's 4300-digit limit
    "\ufeff" + _body(),  # byte order mark
    "\x00\x00\x00",
]


def test_malformed_json_is_400(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    def check(raw: str) -> None:
        assert_problem(client.post("/v1/consents", data=raw, headers=_json(auth)), 400)

    each(MALFORMED_BODIES, check)
    assert row_counts(database) == EMPTY


def test_invalid_utf8_is_400(client: FlaskClient, auth: dict[str, str], database: Database) -> None:
    raw = _body().encode().replace(FIXED_PATIENT.encode(), b"\xff\xfe\xfd")
    assert_problem(client.post("/v1/consents", data=raw, headers=_json(auth)), 400)
    assert row_counts(database) == EMPTY


def test_bodies_that_are_not_an_object_are_422(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    def check(raw: str) -> None:
        assert_problem(client.post("/v1/consents", data=raw, headers=_json(auth)), 422)

    each(["[]", "null", "1", '"a string"', "1e999999", "{}", ""], check)
    assert row_counts(database) == EMPTY


def test_deep_json_in_a_field_is_refused(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    deep = '{"method": "paper", "evidence_ref": ' + "[" * 5000 + "]" * 5000 + "}"
    raw = _body()[:-1] + ', "collection": ' + deep + "}"
    response = client.post("/v1/consents", data=raw, headers=_json(auth))
    assert response.status_code in (400, 422)
    assert_problem(response, response.status_code)
    assert row_counts(database) == EMPTY


def test_wrong_content_type_is_415(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    def check(content_type: str) -> None:
        response = client.post(
            "/v1/consents", data=_body(), headers={**auth, "Content-Type": content_type}
        )
        assert_problem(response, 415)

    each(
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
        check,
    )
    assert row_counts(database) == EMPTY


def test_json_with_charset_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        "/v1/consents",
        data=_body(),
        headers={**auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/decisions"),
        ("post", "/v1/decisions:batch"),
        ("post", "/v1/practitioners/rpps:1/revoke-all"),
    ],
)
def test_other_writes_refuse_unknown_fields_and_garbage(
    client: FlaskClient, auth: dict[str, str], database: Database, method: str, path: str
) -> None:
    call = getattr(client, method)
    assert_problem(call(path, json={"surprise": 1}, headers=auth), 422, "surprise")
    assert_problem(call(path, data="{", headers=_json(auth)), 400)
    assert_problem(call(path, data="{}", headers={**auth, "Content-Type": "text/plain"}), 415)
    assert row_counts(database) == EMPTY


def test_amend_and_revoke_refuse_hostile_bodies(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = create_consent(client, auth)
    path = f"/v1/consents/{created['id']}"
    headers = {**_json(auth), "If-Match": '"1"'}
    for raw, status in (
        ('{"decision": "deny", "extra": 1}', 422),
        ('{"valid_from": "2026-02-30T00:00:00Z"}', 422),
        ('{"categories": []}', 422),
        ('{"reason": "\\u0000"}', 422),
        ("[" * 50_000, 400),
        ('{"decision": ' + "1" * 5000 + "}", 400),
    ):
        assert_problem(client.patch(path, data=raw, headers=headers), status)
        assert_problem(client.post(f"{path}/revoke", data=raw, headers=_json(auth)), status)
    assert client.get(path, headers=auth).get_json()["version"] == 1
    assert row_counts(database)["consent_versions"] == 1


def test_hostile_path_identifiers_are_422(client: FlaskClient, auth: dict[str, str]) -> None:
    def check(value: str) -> None:
        export = f"/v1/patients/{value}/export"
        assert_problem(client.get(export, headers=auth), 422, "patient_id", location="path")
        revoke_all = f"/v1/practitioners/{value}/revoke-all"
        assert_problem(
            client.post(revoke_all, json={}, headers=auth), 422, "practitioner_id", location="path"
        )

    each(
        [
            "%00",
            "%ED%A0%80",  # a lone surrogate, UTF-8 encoded
            "Jean%20Dupont",
            "185057800608436",
            "a" * 5000,
        ],
        check,
    )


def test_malformed_consent_ids_are_404(client: FlaskClient, auth: dict[str, str]) -> None:
    def check(consent_id: str) -> None:
        assert_problem(client.get(f"/v1/consents/{consent_id}", headers=auth), 404)

    each(["not-a-uuid", "%00", "1" * 5000, "..%2F..%2Fetc"], check)


def test_idempotency_key_must_be_visible_ascii(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    for key in ("", "clé", "a b", "k" * 256):
        response = client.post(
            "/v1/consents", data=_body(), headers={**_json(auth), "Idempotency-Key": key}
        )
        assert_problem(response, 400)
    assert row_counts(database) == EMPTY


def _json(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Content-Type": "application/json"}


def each(cases: Sequence[T], check: Callable[[T], None]) -> None:
    """Run ``check`` on every case and report all that fail, not just the first.

    One test per list rather than one per case keeps the suite fast: each
    test pays for an app, a key and emptied tables on two backends.
    """
    failures = []
    for case in cases:
        try:
            check(case)
        except AssertionError as error:
            failures.append(f"{str(case)[:80]!r}: {str(error)[:300]}")
    assert not failures, "\n".join(failures)
