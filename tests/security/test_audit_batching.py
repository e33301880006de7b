"""Read, decision and refusal audit entries appended off the request path, and none lost.

The batch writer (``audit.writer``) appends a process's entries from a
thread of its own. These tests hold it to its promises on both databases:
every entry of many concurrent requests lands and the chains verify; a
database that fails the writer is retried until the batch commits; a full
queue sends requests back to appending themselves (and to a 503 when that
fails); a forked child has a writer of its own; interpreter exit flushes,
in a plain process and in gunicorn workers stopped by SIGTERM.
Faults are real: a locked SQLite file, a PostgreSQL connection cut by a TCP
proxy, a locked PostgreSQL table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from consent_service import audit, create_app
from consent_service.audit import trail as audit_trail
from consent_service.audit import writer as audit_writer
from consent_service.config import ConfigError, Settings
from consent_service.db.audit_models import AuditEntry
from consent_service.db.session import Database, make_engine
from consent_service.timefmt import utcnow
from tests.conftest import REPO_ROOT, KeyFactory
from tests.deploy.test_gunicorn import running_server
from tests.support.broker import Proxy

QUESTION = {
    "patient_id": "pat-batch-1",
    "practitioner_id": "rpps:10003456789",
    "category": "radiographs",
    "purpose": "care-coordination",
}
# Long enough that nothing is appended unless a flush (or a full batch) asks.
HELD_MS = 60_000


def _count(database: Database) -> int:
    """Entries in the table now, without waiting for any writer."""
    with database.reading() as session:
        return session.scalar(select(func.count()).select_from(AuditEntry)) or 0


def _verify(database: Database) -> audit.Report:
    with database.reading() as session:
        return audit.verify(session)


def _app(settings: Settings, database: Database, batch_ms: int) -> Flask:
    return create_app(dataclasses.replace(settings, audit_batch_ms=batch_ms), database=database)


def _writer(database: Database) -> audit_writer.BatchWriter:
    writer = audit_trail.batch_writer(database, HELD_MS)
    assert writer is not None
    return writer


def _decide(client: FlaskClient, auth: dict[str, str]) -> int:
    return client.post("/v1/decisions", json=QUESTION, headers=auth).status_code


def test_entries_are_appended_after_the_answer_with_the_request_time(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    client = _app(settings, database, HELD_MS).test_client()
    asked = utcnow()
    assert _decide(client, auth) == 200
    answered = utcnow()
    assert _count(database) == 0 and _writer(database).pending == 1
    assert audit_writer.flush(timeout=10)
    (entry,) = _rows(database)
    assert entry.action == "decision" and entry.outcome == "deny"
    assert asked <= entry.occurred_at <= answered  # not the (later) time of the append
    assert _verify(database).ok


def test_synchronous_when_the_window_is_zero(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    client = _app(settings, database, 0).test_client()
    assert _decide(client, auth) == 200
    assert _count(database) == 1
    assert audit_trail.batch_writer(database, 0) is None


def test_entries_of_many_concurrent_requests_all_land_and_verify(
    app: Flask, database: Database, auth: dict[str, str], api_key: KeyFactory
) -> None:
    assert app.extensions["consent_service"].settings.audit_batch_ms > 0  # the default batches
    stranger = api_key(org="practice-b", scopes=("consents:read",))
    threads, rounds = 8, 15
    failures: list[int] = []

    def work() -> None:
        local = app.test_client()
        for _ in range(rounds):
            statuses = (
                _decide(local, auth),
                local.get("/v1/consents?patient_id=pat-batch-1", headers=auth).status_code,
                _decide(local, stranger),  # refused: 403, audited too
            )
            failures.extend(status for status in statuses if status not in (200, 403))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures
    assert audit_writer.flush(timeout=20)
    rows = _rows(database)
    assert len(rows) == threads * rounds * 3
    assert sum(row.outcome == "forbidden" for row in rows) == threads * rounds
    report = _verify(database)
    assert report.ok, report.problems


def test_the_audit_listing_shows_the_callers_own_queued_entries(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    client = _app(settings, database, HELD_MS).test_client()
    assert _decide(client, auth) == 200
    items = client.get("/v1/audit", headers=auth).get_json()["items"]
    assert [item["action"] for item in items] == ["decision"]


@contextmanager
def _failing(database: Database, backend: str) -> Iterator[tuple[Engine, Callable[[], None]]]:
    """An engine whose appends fail until ``release()``: a locked file, a cut connection."""
    if backend == "sqlite":
        path = make_url(database.url).database
        assert path
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held by "someone else"
        # The service's engines wait 10 s for a lock; this one gives up fast.
        engine = create_engine(database.url, connect_args={"timeout": 0.05})
        try:
            yield engine, holder.rollback
        finally:
            holder.close()
            engine.dispose()
    else:
        url = make_url(database.url)
        proxy = Proxy(url.port or 5432)
        proxy.cut()  # PostgreSQL is unreachable: connections are reset
        engine = make_engine(url.set(port=proxy.port).render_as_string(hide_password=False))
        try:
            yield engine, proxy.restore
        finally:
            engine.dispose()
            proxy.close()


def test_a_database_error_is_retried_until_the_batch_commits(
    database: Database, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=audit_writer.__name__)
    records = [
        audit.Record("decision", "permit", 200, {"patient_id": f"pat-{n}"}, request_id=f"r-{n}")
        for n in range(25)
    ]
    with _failing(database, backend) as (engine, release):
        writer = audit_writer.BatchWriter(engine, window_ms=5)
        assert writer.submit(records)

        def failed_attempts() -> int:
            return sum("append failed" in record.getMessage() for record in caplog.records)

        deadline = time.monotonic() + 10
        while failed_attempts() < 3:
            assert time.monotonic() < deadline, "the writer never reached the database"
            time.sleep(0.05)
        assert not writer.flush(timeout=0.2) and writer.pending == 25
        assert _count(database) == 0
        release()
        assert writer.flush(timeout=20)
    rows = _rows(database)
    assert [row.request_id for row in rows] == [f"r-{n}" for n in range(25)]
    assert _verify(database).ok
    messages = [record.getMessage() for record in caplog.records]
    assert any("appended after" in message for message in messages)
    assert not any("pat-" in message for message in messages)  # ids of requests only


def test_a_full_queue_sends_requests_back_to_appending_themselves(
    settings: Settings,
    database: Database,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_writer, "MAX_PENDING", 3)
    client = _app(settings, database, HELD_MS).test_client()
    for _ in range(3):
        assert _decide(client, auth) == 200
    assert _count(database) == 0 and _writer(database).pending == 3
    for _ in range(2):
        assert _decide(client, auth) == 200
    assert _count(database) == 2  # past the bound: appended in the request
    assert _writer(database).pending == 3
    assert audit_writer.flush(timeout=10)
    assert _count(database) == 5
    assert _verify(database).ok


@contextmanager
def _audit_table_locked(database: Database, backend: str) -> Iterator[None]:
    """Inserts into ``audit_entries`` wait (and time out); reads go on."""
    if backend == "sqlite":
        path = make_url(database.url).database
        assert path
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
    else:
        with database.engine.connect() as connection:
            connection.execute(text("LOCK TABLE audit_entries IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                connection.rollback()


@pytest.mark.slow
def test_a_full_queue_and_a_failing_append_answer_503(
    settings: Settings,
    database: Database,
    backend: str,
    auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit_writer, "MAX_PENDING", 0)
    client = _app(settings, database, HELD_MS).test_client()
    with _audit_table_locked(database, backend):
        response = client.post("/v1/decisions", json=QUESTION, headers=auth)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert _count(database) == 0  # the caller was told: no answer, no entry
    assert _decide(client, auth) == 200 and _count(database) == 1


def test_a_forked_child_gets_a_writer_of_its_own(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    app = _app(settings, database, HELD_MS)
    client = app.test_client()
    for _ in range(3):
        assert _decide(client, auth) == 200
    parent_writer = _writer(database)
    assert parent_writer.pending == 3
    pid = os.fork()
    if pid == 0:  # the child: exit codes say which expectation failed
        code = 10
        try:
            database.engine.dispose(close=False)  # the parent's connections stay the parent's
            code = 11 if _decide(client, auth) != 200 else 12
            child_writer = _writer(database)
            if child_writer is not parent_writer and child_writer.pending == 1:
                code = 13 if not audit_writer.flush(timeout=10) else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent_writer.pending == 3  # untouched by the child
    (child_entry,) = _rows(database)
    assert f"-{pid}-" in child_entry.shard
    assert audit_writer.flush(timeout=10)
    assert len(_rows(database)) == 4
    assert _verify(database).ok


EXITING_PROCESS = textwrap.dedent(
    """
    import os, sys
    from consent_service import create_app
    from consent_service.audit import trail as audit_trail
    from consent_service.config import Settings
    from consent_service.db.session import Database

    database = Database(os.environ["URL"])
    settings = Settings(
        database_url=database.url,
        secret_keys=("test-signing-key-0123456789abcdef",),
        rate_limits="off",
        audit_batch_ms=60_000,
    )
    client = create_app(settings, database=database).test_client()
    headers = {"Authorization": os.environ["AUTH"]}
    question = {
        "patient_id": "pat-exit",
        "practitioner_id": "rpps:1",
        "category": "billing",
        "purpose": "referral",
    }
    for _ in range(7):
        assert client.post("/v1/decisions", json=question, headers=headers).status_code == 200
    print(audit_trail.batch_writer(database, 60_000).pending, flush=True)
    sys.exit(0)
    """
)


def test_pending_entries_are_appended_at_interpreter_exit(
    database: Database, auth: dict[str, str]
) -> None:
    env = {**os.environ, "URL": database.url, "AUTH": auth["Authorization"]}
    result = subprocess.run(
        [sys.executable, "-c", EXITING_PROCESS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["7"]  # still queued when the process decided to exit
    rows = _rows(database)
    assert [row.action for row in rows] == ["decision"] * 7
    assert {json.loads(row.objects)["patient_id"] for row in rows} == {"pat-exit"}
    assert _verify(database).ok


@pytest.mark.slow
def test_gunicorn_workers_append_their_pending_entries_on_sigterm(tmp_path: Path) -> None:
    """The real exit path: gunicorn workers leave through ``sys.exit``, so ``atexit`` runs."""
    database = tmp_path / "consent.db"

    def count() -> int:
        with sqlite3.connect(database) as connection:
            found: int = connection.execute("SELECT count(*) FROM audit_entries").fetchone()[0]
            return found

    with running_server(tmp_path, CONSENT_AUDIT_BATCH_MS="1000") as server:
        started = time.monotonic()
        for _ in range(6):
            assert server.post_json("/v1/decisions", QUESTION)[0] == 200
        queued = count()
        if time.monotonic() - started < 0.8:  # well inside the window: nothing appended yet
            assert queued == 0
        os.killpg(server.process.pid, signal.SIGTERM)
        assert server.process.wait(timeout=40) == 0
    assert count() == 6


@pytest.mark.parametrize(
    ("value", "expected"), [(None, 25), ("0", 0), ("20", 20), (" 1000 ", 1000)]
)
def test_the_batch_window_setting(value: str | None, expected: int) -> None:
    env = {} if value is None else {"CONSENT_AUDIT_BATCH_MS": value}
    assert Settings.from_env(env).audit_batch_ms == expected


@pytest.mark.parametrize("value", ["", "-1", "1001", "5ms", "2.5"])
def test_a_bad_batch_window_is_one_line_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"CONSENT_AUDIT_BATCH_MS": value})
    message = str(error.value)
    assert message.startswith("CONSENT_AUDIT_BATCH_MS:") and "\n" not in message


def _rows(database: Database) -> list[AuditEntry]:
    """Entries in append order, as they are now (no flush)."""
    with database.reading() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
