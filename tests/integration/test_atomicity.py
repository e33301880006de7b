"""A failure after the version row is written leaves nothing behind.

Two kinds of fault are injected where the outbox event is staged, i.e. after
the consent and version rows were flushed: a Python error, and a real
database error (a duplicate event id, refused by the unique constraint at
flush). Either way the transaction rolls back as a whole, the API answers a
bare problem without internals, and the next request works.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.outbox import writer
from consent_service.services import consents as consent_service
from tests.conftest import consent_body
from tests.integration.api_support import EMPTY, create_consent, row_counts


class InjectedFault(RuntimeError):
    pass


def raise_error(**_: Any) -> dict[str, Any]:
    raise InjectedFault("injected after the version insert")


def duplicate_event_id(session: Session, *, snapshot: dict[str, Any], now: Any) -> dict[str, Any]:
    """Stage the real event twice under one event id: the database refuses the second."""
    row = writer.add_event(session, snapshot=snapshot, now=now)
    session.add(OutboxEvent(**row))
    return row


FAULTS: dict[str, Callable[..., dict[str, Any]]] = {
    "python-error": raise_error,
    "database-error": duplicate_event_id,
}


@pytest.fixture(params=sorted(FAULTS))
def inject(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call to make every later event staging fail (the services import ``add_event``)."""

    def arm() -> None:
        monkeypatch.setattr(consent_service, "add_event", FAULTS[request.param])

    return arm


def assert_bare_500(response: Any) -> None:
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    text = response.get_data(as_text=True)
    body = json.loads(text)
    assert body["status"] == 500 and body["request_id"]
    for leak in (
        "Traceback",
        "INSERT",
        "outbox",
        "injected",
        "IntegrityError",
        "sqlite",
        "psycopg",
    ):
        assert leak not in text


def test_failed_grant_leaves_no_consent_version_or_event(
    client: FlaskClient, auth: dict[str, str], database: Database, inject: Callable[[], None]
) -> None:
    inject()
    response = client.post(
        "/v1/consents", json=consent_body(), headers={**auth, "Idempotency-Key": "k1"}
    )
    assert_bare_500(response)
    assert row_counts(database) == EMPTY
    assert client.get("/v1/consents", headers=auth).get_json()["items"] == []


def test_failed_amend_and_revoke_leave_the_consent_as_it_was(
    client: FlaskClient, auth: dict[str, str], database: Database, inject: Callable[[], None]
) -> None:
    consent = create_consent(client, auth)
    before = row_counts(database)
    inject()
    path = f"/v1/consents/{consent['id']}"
    assert_bare_500(
        client.patch(path, json={"decision": "deny"}, headers={**auth, "If-Match": '"1"'})
    )
    assert_bare_500(client.post(f"{path}/revoke", json={}, headers=auth))
    assert row_counts(database) == before
    current = client.get(path, headers=auth)
    assert current.headers["ETag"] == '"1"'
    assert current.get_json() == consent


def test_failed_revoke_all_revokes_none(
    client: FlaskClient,
    auth: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consents = [create_consent(client, auth, practitioner_id="rpps:9") for _ in range(3)]
    before = row_counts(database)
    staged = []

    def fail_on_third(session: Session, *, snapshot: dict[str, Any], now: Any) -> dict[str, Any]:
        staged.append(snapshot["id"])
        if len(staged) == 3:
            raise InjectedFault("third")
        return writer.add_event(session, snapshot=snapshot, now=now)

    monkeypatch.setattr(consent_service, "add_event", fail_on_third)
    response = client.post("/v1/practitioners/rpps:9/revoke-all", json={}, headers=auth)
    assert_bare_500(response)
    assert len(staged) == 3
    assert row_counts(database) == before
    listed = client.get("/v1/consents?practitioner_id=rpps:9", headers=auth).get_json()["items"]
    assert listed == consents


def test_service_works_again_after_a_fault(
    client: FlaskClient,
    auth: dict[str, str],
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[[], None],
) -> None:
    inject()
    assert_bare_500(client.post("/v1/consents", json=consent_body(), headers=auth))
    monkeypatch.undo()
    created = create_consent(client, auth)
    assert created["version"] == 1
    assert row_counts(database) == {
        **EMPTY,
        "consents": 1,
        "consent_versions": 1,
        "outbox_events": 1,
    }
