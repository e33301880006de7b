"""Request ids are the service's own: returned, logged on every status, audited."""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.audit import writer as audit_writer
from consent_service.db.audit_models import AuditEntry
from consent_service.db.session import Database
from consent_service.http import request_ids
from consent_service.services import consents as consent_service
from tests.conftest import consent_body


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "consent_service.access"]


def test_a_callers_request_id_is_logged_as_client_request_id_only(
    client: FlaskClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consent_service.access")
    answers = [client.get("/v1/consents", headers={**auth, "X-Request-Id": "trace-123"})]
    answers.append(client.get("/v1/consents", headers={**auth, "X-Request-Id": "trace-123"}))
    ids = [answer.headers["X-Request-Id"] for answer in answers]
    assert "trace-123" not in ids and len(set(ids)) == 2
    lines = _access_lines(caplog)
    assert [line.__dict__["request_id"] for line in lines] == ids
    assert [line.__dict__["client_request_id"] for line in lines] == ["trace-123"] * 2


@pytest.mark.parametrize("hostile", ["a\tb", "x" * 65, "<script>", "é"])
def test_a_hostile_client_request_id_is_not_logged(
    client: FlaskClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture, hostile: str
) -> None:
    caplog.set_level(logging.INFO, logger="consent_service.access")
    response = client.get("/v1/consents", headers={**auth, "X-Request-Id": hostile})
    assert response.status_code == 200
    (line,) = _access_lines(caplog)
    assert line.__dict__["client_request_id"] is None
    assert line.__dict__["request_id"] == response.headers["X-Request-Id"] != hostile


def test_the_log_line_of_a_413_carries_its_own_id(
    client: FlaskClient, auth: dict[str, str], app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consent_service.access")
    first = client.get("/v1/consents", headers=auth)
    oversized = b"{" + b" " * app.config["MAX_CONTENT_LENGTH"] + b"}"
    refused = client.post(
        "/v1/consents", data=oversized, headers={**auth, "Content-Type": "application/json"}
    )
    assert refused.status_code == 413
    lines = _access_lines(caplog)
    assert [line.__dict__["status"] for line in lines] == [200, 413]
    assert lines[1].__dict__["request_id"] == refused.headers["X-Request-Id"]
    assert refused.headers["X-Request-Id"] != first.headers["X-Request-Id"]
    assert refused.get_json()["request_id"] == refused.headers["X-Request-Id"]


def test_the_log_lines_of_a_500_carry_its_own_id(
    client: FlaskClient,
    auth: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    client.get("/v1/consents", headers=auth)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(consent_service, "list_consents", broken)
    failed = client.get("/v1/consents", headers=auth)
    assert failed.status_code == 500
    mine = [
        r
        for r in caplog.records
        if getattr(r, "request_id", None) == failed.headers["X-Request-Id"]
    ]
    assert {record.name for record in mine} >= {
        "consent_service.access",
        "consent_service.http.problems",
    }
    (line,) = [r for r in _access_lines(caplog) if r.__dict__["status"] == 500]
    assert line in mine


def test_the_audit_entry_records_the_services_id(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = client.post(
        "/v1/consents", json=consent_body(), headers={**auth, "X-Request-Id": "mine"}
    )
    read = client.get(
        f"/v1/consents/{created.get_json()['id']}", headers={**auth, "X-Request-Id": "mine"}
    )
    audit_writer.flush(timeout=10)
    with database.engine.connect() as connection:
        recorded = set(connection.execute(select(AuditEntry.request_id)).scalars())
    assert recorded == {created.headers["X-Request-Id"], read.headers["X-Request-Id"]}


def _child_id(queue: Any) -> None:
    queue.put(request_ids.new_request_id())


def test_ids_are_unique_across_forked_processes() -> None:
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child_id, args=(queue,)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=30)
    ids = [queue.get(timeout=10) for _ in children] + [request_ids.new_request_id()]
    prefixes = {value.rsplit("-", 1)[0] for value in ids}
    assert len(prefixes) == len(ids)


def test_ids_within_a_process_never_repeat() -> None:
    ids = {request_ids.new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
