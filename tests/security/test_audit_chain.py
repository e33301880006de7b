"""The audit chain: what is recorded, and that every kind of tampering is detected."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import delete, func, insert, select, text, update

from consent_service import audit
from consent_service.audit import writer as audit_writer
from consent_service.cli import main
from consent_service.db.audit_models import AuditCheckpoint, AuditEntry
from consent_service.db.models import ConsentVersion
from consent_service.db.session import Database
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory, consent_body
from tests.factories import grant
from tests.security.conftest import audit_rows

DECISION = {
    "practitioner_id": "rpps:10003456789",
    "category": "radiographs",
    "purpose": "care-coordination",
}


def _activity(client: FlaskClient, auth: dict[str, str], rounds: int = 3) -> list[str]:
    """Writes, reads and decisions through the API; returns the consent ids."""
    ids = []
    for _ in range(rounds):
        created = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()
        ids.append(created["id"])
        client.get(f"/v1/consents/{created['id']}", headers=auth)
        client.post(
            "/v1/decisions", json={"patient_id": created["patient_id"], **DECISION}, headers=auth
        )
        client.post(f"/v1/consents/{created['id']}/revoke", json={"reason": None}, headers=auth)
    # Reads and decisions reach the table a few milliseconds later, through
    # the batch writer; checkpoints and exports below must see them.
    assert audit_writer.flush(timeout=10)
    return ids


def _verify(database: Database, **kwargs: object) -> audit.Report:
    assert audit_writer.flush(timeout=10)
    with database.reading() as session:
        return audit.verify(session, **kwargs)  # type: ignore[arg-type]


def test_writes_reads_decisions_and_refusals_are_recorded(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, database: Database
) -> None:
    created = client.post("/v1/consents", json=consent_body(), headers=auth).get_json()
    client.get(f"/v1/consents/{created['id']}", headers=auth)
    answer = client.post(
        "/v1/decisions", json={"patient_id": created["patient_id"], **DECISION}, headers=auth
    ).get_json()
    other = api_key(org="practice-b")
    assert client.get(f"/v1/consents/{created['id']}", headers=other).status_code == 404
    assert (
        client.get("/v1/consents", headers={"Authorization": "Bearer csk_x_y"}).status_code == 401
    )
    reader = api_key(scopes=("consents:read",))
    assert client.post("/v1/decisions", json={}, headers=reader).status_code == 403

    rows = audit_rows(database)
    summary = [(row.action, row.outcome) for row in rows]
    assert summary == [
        ("consent.granted", "ok"),
        ("consent.read", "ok"),
        ("decision", "permit"),
        ("consent.read", "not-found"),
        ("decision", "forbidden"),
        # Refused keys: one entry per source, reason and window, appended
        # when the window ends (here: when the test flushes the audit log).
        ("authentication", "unauthorized"),
    ]
    granted, _read, decided, foreign, _, unauthorized = rows
    assert json.loads(granted.objects)["consent_id"] == created["id"]
    assert granted.organization == "practice-a" and granted.client_id
    assert json.loads(decided.objects)["consent_id"] == answer["consent_id"]
    assert foreign.organization == "practice-b"
    refusal = json.loads(unauthorized.objects)
    assert unauthorized.client_id is None
    assert (refusal["key"], refusal["count"], refusal["address"]) == ("malformed", 1, "127.0.0.1")
    assert all(row.request_id for row in rows)
    assert _verify(database).ok


def test_a_write_and_its_audit_entry_commit_together(database: Database) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        grant(session, actor="client:x", patient_id="pat-1")
        raise RuntimeError("the request fails after the version was flushed")
    assert audit_rows(database) == []
    with database.transaction() as session:
        grant(session, actor="system:test", patient_id="pat-1")
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(ConsentVersion)) == 1
    assert [row.action for row in audit_rows(database)] == ["consent.granted"]
    assert _verify(database).ok


def test_decision_batch_appends_one_entry_per_decision(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    checks = [{"patient_id": f"pat-{n}", **DECISION} for n in range(5)]
    response = client.post("/v1/decisions:batch", json={"checks": checks}, headers=auth)
    assert response.status_code == 200
    rows = audit_rows(database, action="decision")
    assert [json.loads(row.objects)["patient_id"] for row in rows] == [
        c["patient_id"] for c in checks
    ]
    assert {row.outcome for row in rows} == {"deny"}


def test_no_free_text_in_the_audit_log(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    secret_reason = "patient told me about her depression"
    created = client.post(
        "/v1/consents", json=consent_body(reason=secret_reason), headers=auth
    ).get_json()
    client.post(
        f"/v1/consents/{created['id']}/revoke", json={"reason": secret_reason}, headers=auth
    )
    client.get("/v1/patients/Jean%20Dupont/export", headers=auth)
    dump = json.dumps([row.objects for row in audit_rows(database)])
    assert "depression" not in dump and "Dupont" not in dump
    assert "<invalid>" in dump


def test_concurrent_appends_keep_every_chain_intact(
    client: FlaskClient, auth: dict[str, str], database: Database, app: object
) -> None:
    def work() -> None:
        local = app.test_client()  # type: ignore[attr-defined]
        _activity(local, auth, rounds=3)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = _verify(database)
    assert report.ok, report.problems
    assert report.entries == 4 * 3 * 4  # threads x rounds x (grant, read, decide, revoke)


def _tamper(database: Database, statement: object) -> None:
    with database.engine.begin() as connection:
        connection.execute(statement)  # type: ignore[call-overload]


def _longest_chain(database: Database) -> list[AuditEntry]:
    """The entries of the chain holding the most, in order: writes and batched
    reads may append on different chains."""
    rows = audit_rows(database)
    shard = Counter(row.shard for row in rows).most_common(1)[0][0]
    return [row for row in rows if row.shard == shard]


def _middle(database: Database) -> AuditEntry:
    by_chain = _longest_chain(database)
    return by_chain[len(by_chain) // 2]


def test_an_updated_entry_is_detected(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth)
    victim = _middle(database)
    _tamper(database, update(AuditEntry).where(AuditEntry.id == victim.id).values(outcome="deny"))
    report = _verify(database)
    assert not report.ok and report.first_broken == victim.id
    assert "content changed" in report.problems[0]


def test_a_deleted_entry_is_detected(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth)
    victim = _middle(database)
    _tamper(database, delete(AuditEntry).where(AuditEntry.id == victim.id))
    report = _verify(database)
    assert not report.ok
    # The victim's successor in its chain; ids interleave chains (writes and
    # batched reads append on different ones).
    successor = min(
        row.id for row in audit_rows(database) if row.shard == victim.shard and row.id > victim.id
    )
    assert report.first_broken == successor


def test_an_inserted_entry_is_detected(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth)
    after = _middle(database)
    # Make room in the numbering, then slot a forged entry in; the forger has
    # no audit key, so its hash cannot be right.
    with database.engine.begin() as connection:
        later = connection.execute(
            select(AuditEntry.id, AuditEntry.seq)
            .where(AuditEntry.shard == after.shard, AuditEntry.seq > after.seq)
            .order_by(AuditEntry.seq.desc())
        ).all()
        for row in later:
            connection.execute(
                update(AuditEntry).where(AuditEntry.id == row.id).values(seq=row.seq + 1)
            )
        forged = {
            column: getattr(after, column)
            for column in ("shard", "occurred_at", "client_id", "organization", "key_id")
        }
        connection.execute(
            insert(AuditEntry).values(
                **forged,
                seq=after.seq + 1,
                request_id="forged",
                action="consent.read",
                outcome="ok",
                status=200,
                objects="{}",
                prev_hash=after.hash,
                hash="f" * 64,
            )
        )
        forged_id = connection.execute(select(func.max(AuditEntry.id))).scalar_one()
    report = _verify(database)
    assert not report.ok and report.first_broken == forged_id


def test_swapped_entries_are_detected(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth)
    rows = _longest_chain(database)
    first, second = rows[1], rows[2]
    with database.engine.begin() as connection:
        for row, other in ((first, second), (second, first)):
            connection.execute(
                update(AuditEntry)
                .where(AuditEntry.id == row.id)
                .values(
                    action=other.action,
                    outcome=other.outcome,
                    objects=other.objects,
                    request_id=other.request_id,
                )
            )
    report = _verify(database)
    assert not report.ok and report.first_broken == first.id


def test_a_truncated_tail_is_detected_through_checkpoints(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth)
    with database.transaction() as session:
        exported = audit.create_checkpoint(session, now=utcnow())
    assert _verify(database).ok
    last = audit_rows(database)[-1]
    _tamper(database, delete(AuditEntry).where(AuditEntry.id == last.id))
    report = _verify(database)
    assert not report.ok and "truncated" in report.problems[0]
    # Removing the stored checkpoint too does not help: the exported copy still speaks.
    _tamper(database, delete(AuditCheckpoint))
    assert _verify(database).ok
    report = _verify(database, exported=[exported])
    assert not report.ok and "truncated" in report.problems[0]


def test_a_forged_or_removed_checkpoint_is_detected(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth, rounds=1)
    for _ in range(3):
        with database.transaction() as session:
            audit.create_checkpoint(session, now=utcnow())
    with database.reading() as session:
        middle = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).all()[1]
    _tamper(database, delete(AuditCheckpoint).where(AuditCheckpoint.id == middle.id))
    assert "missing" in _verify(database).problems[0]
    _tamper(database, update(AuditCheckpoint).values(body=text("body || ' '")))
    assert "bad signature" in _verify(database).problems[0]


def test_purge_keeps_the_rest_verifiable(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    _activity(client, auth, rounds=2)
    old = audit_rows(database)
    # Not the last entry's time: batched reads and decisions are appended after
    # the write that followed them, so the last entry by id need not be the latest.
    cut = max(row.occurred_at for row in old) + timedelta(microseconds=1)
    # Later activity on the same chains, after the cut.
    _activity(client, auth, rounds=2)
    with database.transaction() as session:
        removed, _ = audit.purge(session, before=cut, now=utcnow())
    assert removed == len(old)
    remaining = audit_rows(database)
    assert remaining and min(row.id for row in remaining) > old[-1].id
    report = _verify(database)
    assert report.ok, report.problems
    _tamper(database, update(AuditEntry).where(AuditEntry.id == remaining[0].id).values(status=1))
    assert _verify(database).first_broken == remaining[0].id


def test_cli_verify_names_the_first_broken_entry(
    client: FlaskClient, auth: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_DATABASE_URL", database.url)
    runner = CliRunner()
    _activity(client, auth, rounds=1)
    checkpoint = runner.invoke(main, ["audit", "checkpoint"])
    assert checkpoint.exit_code == 0, checkpoint.output
    assert json.loads(checkpoint.output)["signature"]
    good = runner.invoke(main, ["audit", "verify", "--json"])
    assert good.exit_code == 0 and json.loads(good.output)["ok"]
    exported = runner.invoke(main, ["audit", "export"])
    assert len(exported.output.splitlines()) == len(audit_rows(database))
    victim = _middle(database)
    _tamper(database, update(AuditEntry).where(AuditEntry.id == victim.id).values(action="x"))
    broken = runner.invoke(main, ["audit", "verify"])
    assert broken.exit_code == 1
    assert f"first broken entry: {victim.id}" in broken.output
    purge = runner.invoke(main, ["audit", "purge", "--before", "2000-01-01"])
    assert purge.exit_code == 0 and json.loads(purge.output)["removed"] == 0


def test_audit_endpoint_filters_and_keeps_to_the_organization(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory, database: Database
) -> None:
    ids = _activity(client, auth, rounds=2)
    other = api_key(org="practice-b")
    client.get("/v1/consents", headers=other)
    page = client.get(f"/v1/audit?object_id={ids[0]}&limit=50", headers=auth).get_json()
    assert page["items"] and all(ids[0] in json.dumps(item["objects"]) for item in page["items"])
    assert {item["organization"] for item in page["items"]} == {"practice-a"}
    revoked = client.get("/v1/audit?action=consent.revoked", headers=auth).get_json()["items"]
    assert len(revoked) == 2
    first = client.get("/v1/audit?limit=2", headers=auth).get_json()
    second = client.get(f"/v1/audit?limit=2&after={first['next_after']}", headers=auth).get_json()
    assert first["items"][-1]["id"] < second["items"][0]["id"]
    theirs = client.get("/v1/audit", headers=api_key(org="practice-b")).get_json()["items"]
    assert {item["organization"] for item in theirs} == {"practice-b"}
    assert client.get("/v1/audit?since=yesterday", headers=auth).status_code == 422
