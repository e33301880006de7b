"""The patient form's audit entries: every page that reads a patient's data, every refused link.

Each test counts the entries a single page view adds (the API calls that set
the scene add their own), checks their ids, and the chain still verifies.
No entry may hold a link's token, a name or a text.
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import itsdangerous.timed
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update

from consent_service import audit
from consent_service.audit import writer as audit_writer
from consent_service.cli import main
from consent_service.db.audit_models import AuditEntry
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.services import links
from consent_service.timefmt import utcnow
from tests.conftest import TEST_SECRET_KEYS, consent_body
from tests.web.conftest import Ask, forms, local

PATIENT = "pat-audit-0001"
ORG = "practice-a"


@pytest.fixture(autouse=True)
def fresh_audit_chains() -> Iterator[None]:
    """The tables are emptied after each test; this process's chain heads must go too."""
    audit.reset_chains()
    yield
    audit.reset_chains()


def _last_id(database: Database) -> int:
    """The newest entry's id, once the API's batched entries of the set-up are written."""
    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        return session.scalar(select(func.coalesce(func.max(AuditEntry.id), 0))) or 0


def _added(database: Database, after: int) -> list[dict[str, Any]]:
    """Entries appended after entry ``after``, as (action, outcome, status, ...) dicts."""
    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id)
        ).all()
    return [
        {
            "action": row.action,
            "outcome": row.outcome,
            "status": row.status,
            "organization": row.organization,
            "client_id": row.client_id,
            "request_id": row.request_id,
            "objects": json.loads(row.objects),
        }
        for row in rows
    ]


def _verify(database: Database) -> audit.Report:
    with database.reading() as session:
        return audit.verify(session)


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


def _ids(created: dict[str, Any]) -> dict[str, str]:
    return {
        "actor": "patient",
        "consent_request_id": created["id"],
        "patient_id": PATIENT,
        "practitioner_id": "rpps:10003456789",
    }


def _answer(client: FlaskClient, created: dict[str, Any], answer: str) -> None:
    (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
    assert client.post(form.action, data=form.submission(answer=answer)).status_code == 200


def _consent_id(client: FlaskClient, auth: dict[str, str], created: dict[str, Any]) -> str:
    answered = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    consent_id: str = answered["consent_id"]
    return consent_id


def test_the_answer_form_appends_one_read_entry(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    before = _last_id(database)
    page = client.get(local(created["form_url"]))
    assert page.status_code == 200
    assert _added(database, before) == [
        {
            "action": "consent-request.read",
            "outcome": "ok",
            "status": 200,
            "organization": ORG,
            "client_id": None,
            "request_id": page.headers["X-Request-Id"],
            "objects": _ids(created),
        }
    ]
    assert _verify(database).ok


def test_my_consents_appends_one_entry_naming_every_consent_shown(
    client: FlaskClient, auth: dict[str, str], api_key: Any, ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    _answer(client, created, "grant")
    granted = _consent_id(client, auth, created)
    paper = client.post("/v1/consents", json=consent_body(patient_id=PATIENT), headers=auth)
    elsewhere = consent_body(patient_id=PATIENT)
    other_org = api_key(org="practice-b")
    assert client.post("/v1/consents", json=elsewhere, headers=other_org).status_code == 201
    before = _last_id(database)

    page = client.get(local(created["manage_url"]))
    assert page.status_code == 200
    (entry,) = _added(database, before)
    assert entry["action"] == "patient.consents"
    assert (entry["outcome"], entry["status"], entry["organization"]) == ("ok", 200, ORG)
    assert entry["client_id"] is None
    assert entry["request_id"] == page.headers["X-Request-Id"]
    objects = entry["objects"]
    assert sorted(objects.pop("consent_ids")) == sorted([granted, paper.get_json()["id"]])
    assert objects == {**_ids(created), "count": 2}
    assert _verify(database).ok


def test_a_patient_with_no_consent_yet_is_audited_too(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    before = _last_id(database)
    assert client.get(local(created["manage_url"])).status_code == 200
    (entry,) = _added(database, before)
    assert entry["objects"] == {**_ids(created), "consent_ids": [], "count": 0}


def test_each_answer_is_audited_once_with_the_patient_as_actor(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    granting, refusing = ask(patient_id=PATIENT), ask(patient_id=PATIENT)
    for created, answer in ((granting, "grant"), (refusing, "refuse")):
        (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
        before = _last_id(database)
        posted = client.post(form.action, data=form.submission(answer=answer))
        assert posted.status_code == 200
        (entry,) = _added(database, before)
        assert entry["request_id"] == posted.headers["X-Request-Id"]
        assert (entry["organization"], entry["client_id"]) == (ORG, None)
        if answer == "grant":
            assert (entry["action"], entry["outcome"]) == ("consent.granted", "ok")
            assert entry["objects"]["consent_id"] == _consent_id(client, auth, created)
            assert entry["objects"]["actor"] == "patient"
        else:
            assert (entry["action"], entry["outcome"]) == ("consent-request.refused", "ok")
            assert entry["objects"] == _ids(created)
    assert _verify(database).ok


def _tampered(token: str) -> str:
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


@pytest.mark.parametrize(
    ("link", "action"),
    [("form_url", "consent-request.read"), ("manage_url", "patient.consents")],
)
def test_a_tampered_link_is_audited_as_refused(
    client: FlaskClient, ask: Ask, database: Database, link: str, action: str
) -> None:
    created = ask(patient_id=PATIENT)
    path = urlsplit(created[link]).path
    before = _last_id(database)
    page = client.get(path, query_string={"t": _tampered(_token(created[link]))})
    assert page.status_code == 400
    assert _added(database, before) == [
        {
            "action": action,
            "outcome": "refused",
            "status": 400,
            "organization": None,
            "client_id": None,
            "request_id": page.headers["X-Request-Id"],
            "objects": {"actor": "patient", "link": "tampered"},
        }
    ]


def test_a_tampered_link_in_a_submitted_form_is_audited_as_refused(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    (form,) = forms(client.get(local(created["form_url"])).get_data(as_text=True))
    before = _last_id(database)
    forged = form.submission(answer="grant", t=_tampered(form.fields["t"]))
    assert client.post(form.action, data=forged).status_code == 400
    (entry,) = _added(database, before)
    assert (entry["action"], entry["outcome"]) == ("consent-request.answer", "refused")
    assert entry["objects"] == {"actor": "patient", "link": "tampered"}


def test_an_expired_link_is_audited_as_refused(
    client: FlaskClient, ask: Ask, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = ask(patient_id=PATIENT)
    long_ago = itsdangerous.timed.time.time() - links.MAX_AGE[links.ANSWER].total_seconds() - 60
    with monkeypatch.context() as patched:
        patched.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: long_ago))
        stale = links.sign(TEST_SECRET_KEYS, links.ANSWER, created["id"])
    before = _last_id(database)
    assert client.get("/consent/request", query_string={"t": stale}).status_code == 410
    (entry,) = _added(database, before)
    assert (entry["action"], entry["outcome"], entry["status"]) == (
        "consent-request.read",
        "refused",
        410,
    )
    assert entry["objects"] == {"actor": "patient", "link": "expired"}


def test_a_request_past_its_deadline_is_audited_as_refused_with_its_ids(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    with database.transaction() as session:
        session.execute(
            update(ConsentRequest)
            .where(ConsentRequest.id == created["id"])
            .values(expires_at=utcnow().replace(year=2020))
        )
    before = _last_id(database)
    assert client.get(local(created["form_url"])).status_code == 410
    (entry,) = _added(database, before)
    assert (entry["outcome"], entry["status"], entry["organization"]) == ("refused", 410, ORG)
    assert entry["objects"] == {**_ids(created), "link": "expired"}


def test_a_link_naming_no_request_is_audited_as_refused(
    client: FlaskClient, database: Database
) -> None:
    nowhere = str(uuid.uuid4())
    before = _last_id(database)
    token = links.sign(TEST_SECRET_KEYS, links.MANAGE, nowhere)
    assert client.get("/consent/mine", query_string={"t": token}).status_code == 404
    (entry,) = _added(database, before)
    assert (entry["action"], entry["outcome"], entry["status"]) == (
        "patient.consents",
        "refused",
        404,
    )
    assert entry["organization"] is None
    assert entry["objects"] == {
        "actor": "patient",
        "consent_request_id": nowhere,
        "link": "unknown",
    }


def test_answered_requests_and_inactive_or_foreign_consents_are_audited(
    client: FlaskClient, auth: dict[str, str], ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    _answer(client, created, "grant")
    consent_id = _consent_id(client, auth, created)

    before = _last_id(database)
    assert client.get(local(created["form_url"])).status_code == 409
    (entry,) = _added(database, before)
    assert (entry["action"], entry["outcome"], entry["status"]) == (
        "consent-request.read",
        "conflict",
        409,
    )
    assert entry["objects"] == _ids(created)

    (withdraw,) = forms(client.get(local(created["manage_url"])).get_data(as_text=True))
    assert client.post(withdraw.action, data=withdraw.submission()).status_code == 200
    before = _last_id(database)
    assert client.post(withdraw.action, data=withdraw.submission()).status_code == 409
    (entry,) = _added(database, before)
    assert (entry["action"], entry["outcome"]) == ("consent.withdraw", "conflict")
    assert entry["objects"] == {**_ids(created), "consent_id": consent_id}

    someone_else = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()["id"]
    before = _last_id(database)
    foreign = withdraw.submission(consent_id=someone_else)
    assert client.post(withdraw.action, data=foreign).status_code == 404
    (entry,) = _added(database, before)
    assert (entry["action"], entry["outcome"], entry["status"]) == (
        "consent.withdraw",
        "not-found",
        404,
    )
    assert entry["objects"] == {**_ids(created), "consent_id": someone_else}
    assert _verify(database).ok


def test_no_token_name_or_text_in_the_log_and_the_chain_verifies(
    client: FlaskClient, ask: Ask, database: Database
) -> None:
    created = ask(patient_id=PATIENT)
    _answer(client, created, "grant")
    (withdraw,) = forms(client.get(local(created["manage_url"])).get_data(as_text=True))
    assert client.post(withdraw.action, data=withdraw.submission()).status_code == 200
    tampered = _tampered(_token(created["manage_url"]))
    assert client.get("/consent/mine", query_string={"t": tampered}).status_code == 400

    with database.reading() as session:
        rows = session.scalars(select(AuditEntry)).all()
    assert len(rows) >= 6
    stored = repr([[getattr(row, c.key) for c in AuditEntry.__table__.columns] for row in rows])
    for secret in (
        _token(created["form_url"]),
        _token(created["manage_url"]),
        withdraw.fields["t"],
        withdraw.fields["csrf_token"],
        tampered,
    ):
        assert secret[:24] not in stored
    for free_text in ("Dr Camille Martin", "Orthodontiste", "Cabinet dentaire", "withdrawn"):
        assert free_text not in stored

    verified = CliRunner().invoke(
        main,
        ["audit", "verify", "--json"],
        env={"CONSENT_DATABASE_URL": database.url, "CONSENT_AUDIT_KEYS": None},
    )
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["ok"] is True and report["entries"] == len(rows)


@pytest.fixture
def audit_log_down(database: Database) -> Iterator[None]:
    """Every INSERT into the audit log fails, as when its table or disk is gone."""
    if database.is_sqlite:
        create = [
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'audit log down'); END"
        ]
        drop = ["DROP TRIGGER audit_down"]
    else:
        create = [
            "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit log down'; END $$",
            "CREATE TRIGGER audit_down BEFORE INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION audit_down()",
        ]
        drop = ["DROP TRIGGER audit_down ON audit_entries", "DROP FUNCTION audit_down()"]
    with database.engine.begin() as connection:
        for statement in create:
            connection.execute(text(statement))
    try:
        yield
    finally:
        with database.engine.begin() as connection:
            for statement in drop:
                connection.execute(text(statement))


def test_a_page_whose_read_cannot_be_recorded_is_not_shown(
    client: FlaskClient, ask: Ask, database: Database, request: pytest.FixtureRequest
) -> None:
    created = ask(patient_id=PATIENT)
    _answer(client, created, "grant")
    before = _last_id(database)
    request.getfixturevalue("audit_log_down")

    mine = client.get(local(created["manage_url"]))
    assert mine.status_code == 503
    html = mine.get_data(as_text=True)
    assert "Dr Camille Martin" not in html and "Retirer ce consentement" not in html
    assert client.get(local(created["form_url"])).status_code == 409  # refused all the same
    tampered = _tampered(_token(created["form_url"]))
    assert client.get("/consent/request", query_string={"t": tampered}).status_code == 400
    assert _added(database, before) == []


def test_the_api_audits_consent_requests_under_their_own_names_and_ids(
    database: Database, client: FlaskClient, auth: dict[str, str], ask: Ask
) -> None:
    before = _last_id(database)
    created = ask()
    client.get(f"/v1/consent-requests/{created['id']}", headers=auth)
    entries = [(entry["action"], entry["objects"]) for entry in _added(database, before)]
    assert entries == [
        ("consent-request.create", {"consent_request_id": created["id"]}),
        ("consent-request.read", {"consent_request_id": created["id"]}),
    ]
