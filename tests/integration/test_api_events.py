"""GET /v1/events: the organization's event log as CloudEvents, in commit-safe order."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.services.consents import Actor, grant_consent
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory
from tests.factories import grant
from tests.integration.api_support import (
    amend,
    assert_problem,
    assert_valid_event_data,
    create_consent,
    revoke,
)


def read_all(
    client: FlaskClient, headers: dict[str, str], limit: int = 1000
) -> list[dict[str, Any]]:
    """Every event after position 0, page by page."""
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        response = client.get(f"/v1/events?after={after}&limit={limit}", headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {"items", "next_after"}
        if not body["items"]:
            assert body["next_after"] == after
            return items
        assert body["next_after"] == body["items"][-1]["position"]
        items.extend(body["items"])
        after = body["next_after"]


def test_events_are_cloudevents_of_each_version_in_order(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = create_consent(client, auth)
    amended = amend(client, auth, created, decision="deny")
    revoked = revoke(client, auth, created["id"])

    events = read_all(client, auth)

    assert [e["type"] for e in events] == ["consent.granted", "consent.amended", "consent.revoked"]
    assert [e["data"] for e in events] == [created, amended, revoked]
    for event in events:
        assert set(event) == {
            "specversion",
            "id",
            "type",
            "source",
            "subject",
            "time",
            "datacontenttype",
            "position",
            "data",
        }
        assert event["specversion"] == "1.0"
        assert uuid.UUID(event["id"])
        assert event["source"] == "/organizations/practice-a"
        assert event["subject"] == created["id"]
        assert event["datacontenttype"] == "application/json"
        assert event["time"] == event["data"]["recorded_at"]
        assert_valid_event_data(event["type"], event["data"])
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert len({e["id"] for e in events}) == 3


def test_each_organization_reads_only_its_own_events(
    client: FlaskClient, auth: dict[str, str], api_key: KeyFactory
) -> None:
    other = api_key(org="practice-b", scopes=("consents:write", "events:read"))
    mine = [create_consent(client, auth)["id"] for _ in range(3)]
    theirs = [create_consent(client, other)["id"] for _ in range(2)]
    mine.append(create_consent(client, auth)["id"])

    assert [e["subject"] for e in read_all(client, auth)] == mine
    their_events = read_all(client, other)
    assert [e["subject"] for e in their_events] == theirs
    assert {e["source"] for e in their_events} == {"/organizations/practice-b"}
    assert read_all(client, api_key(org="practice-c", scopes=("events:read",))) == []


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_paging_with_after_has_no_gaps_or_duplicates(
    client: FlaskClient, auth: dict[str, str], limit: int
) -> None:
    for _ in range(4):
        consent = create_consent(client, auth)
        amend(client, auth, consent, decision="deny")
    paged = read_all(client, auth, limit=limit)
    whole = read_all(client, auth)
    assert [e["id"] for e in paged] == [e["id"] for e in whole]
    assert len(whole) == 8
    # Resuming from the middle gives exactly the rest.
    middle = whole[3]["position"]
    rest = client.get(f"/v1/events?after={middle}", headers=auth).get_json()["items"]
    assert rest == whole[4:]


def test_default_limit_and_bounds(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get("/v1/events", headers=auth).get_json()
    assert body == {"items": [], "next_after": 0}
    for query in ("limit=0", "limit=1001", "after=-1", "after=x", "limit=" + "9" * 5000):
        assert_problem(client.get(f"/v1/events?{query}", headers=auth), 422, location="query")


def test_late_committing_transaction_is_not_skipped(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    """A row with a lower outbox id that commits after a later one is still served."""
    if database.is_sqlite:
        pytest.skip("SQLite has one writer at a time: commit order is id order")
    late_actor = Actor(name="client:late", organization="practice-a")
    with database.transaction() as held:
        late = grant_consent(
            held,
            actor=late_actor,
            patient_id="pat-late",
            practitioner_id="rpps:1",
            categories=["billing"],
            purposes=["referral"],
            decision="permit",
            valid_from=None,
            valid_until=None,
            collection={"method": "paper"},
            now=utcnow(),
        )
        early = create_consent(client, auth)
        seen = read_all(client, auth)
        assert [e["subject"] for e in seen] == [early["id"]]
    with database.reading() as session:
        ids = dict(session.execute(select(OutboxEvent.consent_id, OutboxEvent.id)).all())
    assert ids[late["id"]] < ids[early["id"]], "the held transaction must hold the lower id"

    after = seen[-1]["position"]
    resumed = client.get(f"/v1/events?after={after}", headers=auth).get_json()["items"]
    assert [e["subject"] for e in resumed] == [late["id"]]
    assert resumed[0]["position"] > after
    assert [e["subject"] for e in read_all(client, auth)] == [early["id"], late["id"]]


def test_rolled_back_transaction_leaves_no_event(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        grant(session, actor="client:x", patient_id="pat-gone")
        raise RuntimeError("abort")
    kept = create_consent(client, auth)
    assert [e["subject"] for e in read_all(client, auth)] == [kept["id"]]
