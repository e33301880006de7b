"""Consent rows edited directly in the database are found by `audit verify --data`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import delete, insert, select, update

from consent_service import audit
from consent_service.audit import writer as audit_writer
from consent_service.cli import main
from consent_service.db.models import Consent, ConsentVersion
from consent_service.db.session import Database
from consent_service.timefmt import utcnow
from tests.conftest import consent_body


def _history(client: FlaskClient, auth: dict[str, str]) -> tuple[str, str]:
    """A revoked consent (three versions) and an active one."""
    revoked = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()["id"]
    amended = client.patch(
        f"/v1/consents/{revoked}",
        json={"categories": ["radiographs"]},
        headers={**auth, "If-Match": '"1"'},
    )
    assert amended.status_code == 200
    assert client.post(f"/v1/consents/{revoked}/revoke", json={}, headers=auth).status_code == 200
    active = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()["id"]
    return revoked, active


def _check(database: Database) -> audit.DataReport:
    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        return audit.verify_data(session)


def _tamper(database: Database, statement: Any) -> None:
    with database.engine.begin() as connection:
        connection.execute(statement)


def test_untouched_tables_verify(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _history(client, auth)
    report = _check(database)
    assert report.ok, report.problems
    assert (report.consents, report.versions, report.unbound) == (2, 4, 0)


def test_a_revoked_consent_set_back_to_active_is_named(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    revoked, _ = _history(client, auth)
    _tamper(database, update(Consent).where(Consent.id == revoked).values(status="active"))
    report = _check(database)
    assert report.problems == [f"consent {revoked}: current row differs from version 3"]


def test_a_changed_version_row_is_named(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    revoked, _ = _history(client, auth)
    _tamper(
        database,
        update(ConsentVersion)
        .where(ConsentVersion.consent_id == revoked, ConsentVersion.version == 2)
        .values(categories=["radiographs", "billing"]),
    )
    assert _check(database).problems == [f"consent {revoked} version 2: changed"]


def test_rewriting_both_the_row_and_its_version_is_still_found(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    revoked, _ = _history(client, auth)
    _tamper(database, update(Consent).where(Consent.id == revoked).values(status="active"))
    _tamper(
        database,
        update(ConsentVersion)
        .where(ConsentVersion.consent_id == revoked, ConsentVersion.version == 3)
        .values(status="active"),
    )
    assert _check(database).problems == [f"consent {revoked} version 3: changed"]


def test_removed_and_added_versions_are_named(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    revoked, active = _history(client, auth)
    with database.reading() as session:
        latest = session.scalars(
            select(ConsentVersion).where(ConsentVersion.consent_id == revoked)
        ).all()[-1]
        forged = {
            column.key: getattr(latest, column.key)
            for column in ConsentVersion.__table__.columns
            if column.key != "id"
        }
    _tamper(
        database,
        delete(ConsentVersion).where(
            ConsentVersion.consent_id == revoked, ConsentVersion.version == 3
        ),
    )
    forged.update(consent_id=active, version=2, status="active", change="amended")
    _tamper(database, insert(ConsentVersion).values(**forged))
    problems = _check(database).problems
    assert f"consent {revoked} version 3: removed" in problems
    assert f"consent {active} version 2: no audit entry" in problems


@pytest.mark.parametrize("tampered", [False, True])
def test_the_command_exits_1_and_names_the_consent(
    client: FlaskClient,
    auth: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    tampered: bool,
) -> None:
    monkeypatch.setenv("CONSENT_DATABASE_URL", database.url)
    revoked, _ = _history(client, auth)
    assert audit_writer.flush(timeout=10)
    if tampered:
        _tamper(database, update(Consent).where(Consent.id == revoked).values(status="active"))
    result = CliRunner().invoke(main, ["audit", "verify", "--data", "--json"])
    summary = json.loads(result.output)
    assert result.exit_code == (1 if tampered else 0), result.output
    assert summary["data"]["ok"] is not tampered
    assert any(revoked in line for line in summary["data"]["problems"]) is tampered
    text = CliRunner().invoke(main, ["audit", "verify", "--data"])
    assert ("ALTERED" in text.output) is tampered


def test_versions_whose_entries_were_purged_are_counted_not_reported(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _history(client, auth)
    assert audit_writer.flush(timeout=10)
    with database.transaction() as session:
        audit.purge(session, before=utcnow() + timedelta(seconds=1), now=utcnow())
    report = _check(database)
    assert report.ok, report.problems
    assert report.purged == 4
