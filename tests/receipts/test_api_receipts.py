"""Enforcement receipts over the API, on both databases.

Acks from subscribers, the per-consent enforcement view, the subscriber list
with its lag, and every way an ack can be wrong or not allowed.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from consent_service.db.models import OutboxEvent
from consent_service.db.receipt_models import SubscriberReceipt
from consent_service.db.session import Database
from consent_service.services.clients import create_client, revoke_client
from consent_service.timefmt import format_instant, utcnow
from tests.conftest import KeyFactory
from tests.integration.api_support import amend, assert_problem, create_consent, revoke

WRITER_SCOPES = ("consents:read", "consents:write", "events:read")


class Subscriber:
    """A subscriber client: its id, name and Authorization headers."""

    def __init__(self, database: Database, name: str, org: str = "practice-a") -> None:
        with database.transaction() as session:
            client, key = create_client(
                session,
                organization=org,
                scopes=["events:read", "events:ack"],
                name=name,
                now=utcnow(),
            )
        self.id = client.id
        self.name = name
        self.headers = {"Authorization": f"Bearer {key}"}


@pytest.fixture
def writer(api_key: KeyFactory) -> dict[str, str]:
    return api_key(scopes=WRITER_SCOPES)


def event_ids(database: Database, consent_id: str) -> dict[int, str]:
    with database.reading() as session:
        rows = session.execute(
            select(OutboxEvent.consent_version, OutboxEvent.event_id).where(
                OutboxEvent.consent_id == consent_id
            )
        )
        return {row.consent_version: row.event_id for row in rows}


def ack(
    database: Database, consent: dict[str, Any], version: int, applied_at: datetime | None = None
) -> dict[str, Any]:
    return {
        "event_id": event_ids(database, consent["id"])[version],
        "consent_id": consent["id"],
        "version": version,
        "applied_at": format_instant(applied_at or utcnow()),
    }


def post_acks(
    client: FlaskClient, subscriber: Subscriber, acks: list[dict[str, Any]]
) -> dict[str, Any]:
    response = client.post("/v1/subscribers/acks", json={"acks": acks}, headers=subscriber.headers)
    assert response.status_code == 202, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def enforcement(client: FlaskClient, headers: dict[str, str], consent_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/consents/{consent_id}/enforcement", headers=headers)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_acks_are_recorded_and_enforcement_follows_them(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    first, second = Subscriber(database, "cabinet-a"), Subscriber(database, "cabinet-b")
    consent = create_consent(client, writer)
    revoke(client, writer, consent["id"])
    applied_at = utcnow() - timedelta(seconds=2)

    assert post_acks(client, first, [ack(database, consent, 2, applied_at)]) == {
        "accepted": 1,
        "refused": 0,
    }
    halfway = enforcement(client, writer, consent["id"])
    assert halfway["consent_id"] == consent["id"]
    assert halfway["version"] == 2
    assert halfway["enforced_everywhere"] is False
    by_name = {item["name"]: item for item in halfway["subscribers"]}
    assert set(by_name) == {"cabinet-a", "cabinet-b"}
    assert by_name["cabinet-a"]["subscriber_id"] == first.id
    assert by_name["cabinet-a"]["applied_version"] == 2
    assert by_name["cabinet-a"]["applied_at"] == format_instant(applied_at)
    assert by_name["cabinet-a"]["acknowledged_at"] >= format_instant(applied_at)
    assert by_name["cabinet-b"] == {
        "subscriber_id": second.id,
        "name": "cabinet-b",
        "applied_version": None,
        "applied_at": None,
        "acknowledged_at": None,
    }

    post_acks(client, second, [ack(database, consent, 1), ack(database, consent, 2)])
    assert enforcement(client, writer, consent["id"])["enforced_everywhere"] is True


def test_duplicate_and_out_of_order_acks_never_lower_the_version(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    amended = amend(client, writer, consent, decision="deny")
    revoke(client, writer, consent["id"])

    post_acks(client, subscriber, [ack(database, consent, 3)])
    first = enforcement(client, writer, consent["id"])["subscribers"][0]
    answer = post_acks(
        client,
        subscriber,
        [ack(database, consent, 1), ack(database, amended, 2), ack(database, consent, 3)],
    )
    assert answer == {"accepted": 3, "refused": 0}
    # Nothing moved: the version stays 3 and the first receipt's times are kept.
    assert enforcement(client, writer, consent["id"])["subscribers"][0] == first


def test_an_ack_in_a_batch_of_several_versions_keeps_the_highest(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    revoke(client, writer, consent["id"])

    post_acks(client, subscriber, [ack(database, consent, 2), ack(database, consent, 1)])

    with database.reading() as session:
        receipt = session.scalars(select(SubscriberReceipt)).one()
    assert receipt.applied_version == 2


def test_acks_of_unknown_or_foreign_consents_or_versions_are_refused(
    client: FlaskClient, database: Database, writer: dict[str, str], api_key: KeyFactory
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    mine = create_consent(client, writer)
    theirs = create_consent(client, api_key(org="practice-b", scopes=WRITER_SCOPES))
    unknown = {**ack(database, mine, 1), "consent_id": str(uuid.uuid4())}
    future_version = {**ack(database, mine, 1), "version": 2}

    answer = post_acks(
        client,
        subscriber,
        [ack(database, theirs, 1), unknown, future_version, ack(database, mine, 1)],
    )

    assert answer == {"accepted": 1, "refused": 3}
    with database.reading() as session:
        receipts = session.scalars(select(SubscriberReceipt)).all()
    assert [(r.consent_id, r.applied_version) for r in receipts] == [(mine["id"], 1)]


def test_a_future_applied_at_is_recorded_as_the_moment_of_receipt(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    ahead = utcnow() + timedelta(days=3)

    post_acks(client, subscriber, [ack(database, consent, 1, ahead)])

    state = enforcement(client, writer, consent["id"])["subscribers"][0]
    assert state["applied_at"] == state["acknowledged_at"]
    assert state["applied_at"] < format_instant(ahead)


def test_an_idempotency_key_replays_the_first_answer(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    body = {"acks": [ack(database, consent, 1)]}
    headers = {**subscriber.headers, "Idempotency-Key": "batch-1"}

    first = client.post("/v1/subscribers/acks", json=body, headers=headers)
    again = client.post("/v1/subscribers/acks", json=body, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_acking_needs_the_events_ack_scope(
    client: FlaskClient, database: Database, writer: dict[str, str], api_key: KeyFactory
) -> None:
    consent = create_consent(client, writer)
    body = {"acks": [ack(database, consent, 1)]}

    assert_problem(client.post("/v1/subscribers/acks", json=body), 401)
    reader = api_key(scopes=("events:read", "consents:read"))
    assert_problem(client.post("/v1/subscribers/acks", json=body, headers=reader), 403)
    with database.reading() as session:
        assert session.scalars(select(SubscriberReceipt)).all() == []


def test_reading_enforcement_and_subscribers_needs_consents_read(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)

    for path in (f"/v1/consents/{consent['id']}/enforcement", "/v1/subscribers"):
        assert_problem(client.get(path, headers=subscriber.headers), 403)


def test_another_organizations_consent_has_no_enforcement_to_show(
    client: FlaskClient, writer: dict[str, str], api_key: KeyFactory
) -> None:
    consent = create_consent(client, writer)
    other = api_key(org="practice-b", scopes=WRITER_SCOPES)

    assert_problem(client.get(f"/v1/consents/{consent['id']}/enforcement", headers=other), 404)
    missing = f"/v1/consents/{uuid.uuid4()}/enforcement"
    assert_problem(client.get(missing, headers=writer), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "acks"),
        ({"acks": []}, "acks"),
        ({"acks": "nope"}, "acks"),
        ({"acks": [{"event_id": "x"}]}, "acks.0.event_id"),
        ({"acks": [{}], "extra": 1}, "extra"),
    ],
)
def test_malformed_ack_batches_are_422(
    client: FlaskClient, database: Database, body: dict[str, Any], field: str
) -> None:
    subscriber = Subscriber(database, "cabinet-a")

    response = client.post("/v1/subscribers/acks", json=body, headers=subscriber.headers)

    assert_problem(response, 422, field)


def test_bad_ack_fields_are_422(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    good = ack(database, consent, 1)
    for bad in (
        {**good, "version": 0},
        {**good, "version": "1"},
        {**good, "version": 2**40},
        {**good, "applied_at": "yesterday"},
        {**good, "applied_at": "2026-01-01T00:00:00"},
        {**good, "consent_id": "not-a-uuid"},
        {**good, "unknown": True},
    ):
        response = client.post(
            "/v1/subscribers/acks", json={"acks": [bad]}, headers=subscriber.headers
        )
        assert response.status_code == 422, bad


def test_a_batch_over_500_acks_is_422(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)

    response = client.post(
        "/v1/subscribers/acks",
        json={"acks": [ack(database, consent, 1)] * 501},
        headers=subscriber.headers,
    )

    assert_problem(response, 422, "acks")


def test_subscribers_list_shows_who_is_behind(
    client: FlaskClient, database: Database, writer: dict[str, str], api_key: KeyFactory
) -> None:
    up_to_date, behind = Subscriber(database, "cabinet-a"), Subscriber(database, "cabinet-b")
    gone = Subscriber(database, "cabinet-c")
    Subscriber(database, "elsewhere", org="practice-b")
    with database.transaction() as session:
        revoke_client(session, client_id=gone.id, now=utcnow())
    consent = create_consent(client, writer)
    revoke(client, writer, consent["id"])
    other = create_consent(client, writer)
    post_acks(client, up_to_date, [ack(database, consent, 2), ack(database, other, 1)])
    post_acks(client, behind, [ack(database, consent, 1)])

    response = client.get("/v1/subscribers", headers=writer)

    assert response.status_code == 200
    items = {item["name"]: item for item in response.get_json()["items"]}
    assert set(items) == {"cabinet-a", "cabinet-b"}
    assert items["cabinet-a"]["unacknowledged"] == 0
    assert items["cabinet-a"]["oldest_unacknowledged_age_s"] is None
    assert items["cabinet-a"]["last_ack_at"] is not None
    # The revocation and the other consent's grant are still to acknowledge.
    assert items["cabinet-b"]["unacknowledged"] == 2
    assert items["cabinet-b"]["oldest_unacknowledged_age_s"] >= 0
    assert items["cabinet-b"]["subscriber_id"] == behind.id


def test_no_subscriber_means_not_enforced_everywhere(
    client: FlaskClient, writer: dict[str, str]
) -> None:
    consent = create_consent(client, writer)

    found = enforcement(client, writer, consent["id"])

    assert found == {
        "consent_id": consent["id"],
        "version": 1,
        "enforced_everywhere": False,
        "subscribers": [],
    }


def test_metrics_show_lag_and_revocation_latency(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    revoke(client, writer, consent["id"])

    before = client.get("/metrics").get_data(as_text=True)
    assert f'subscriber_id="{subscriber.id}"' in before
    assert _sample(before, "consent_subscriber_unacknowledged_changes", subscriber.id) == 2

    count_before = _histogram_count(before)
    post_acks(client, subscriber, [ack(database, consent, 2)])
    after = client.get("/metrics").get_data(as_text=True)

    assert _sample(after, "consent_subscriber_unacknowledged_changes", subscriber.id) == 0
    assert _sample(after, "consent_subscriber_lag_seconds", subscriber.id) == 0
    assert _histogram_count(after) == count_before + 1


def _sample(text: str, metric: str, subscriber_id: str) -> float:
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'subscriber_id="{subscriber_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{metric} for {subscriber_id} not exposed")


def _histogram_count(text: str) -> float:
    for line in text.splitlines():
        if line.startswith('consent_revocation_enforced_seconds_count{organization="practice-a"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_revocation_unacknowledged_past_the_sla_is_late(
    client: FlaskClient, database: Database, writer: dict[str, str]
) -> None:
    subscriber = Subscriber(database, "cabinet-a")
    consent = create_consent(client, writer)
    post_acks(client, subscriber, [ack(database, consent, 1)])
    revoke(client, writer, consent["id"])
    # The revocation was recorded two minutes ago; the default SLA is 60 s.
    with database.transaction() as session:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.consent_id == consent["id"], OutboxEvent.consent_version == 2)
            .values(created_at=utcnow() - timedelta(minutes=2))
        )

    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "consent_subscriber_late_revocations", subscriber.id) == 1
    assert _sample(text, "consent_subscriber_revocation_lag_seconds", subscriber.id) >= 120
    assert "consent_enforcement_sla_seconds 60.0" in text
    listed = client.get("/v1/subscribers", headers=writer).get_json()["items"][0]
    assert listed["unacknowledged"] == 1
    assert listed["oldest_unacknowledged_age_s"] >= 120

    post_acks(client, subscriber, [ack(database, consent, 2)])

    text = client.get("/metrics").get_data(as_text=True)
    assert _sample(text, "consent_subscriber_late_revocations", subscriber.id) == 0
    assert _sample(text, "consent_subscriber_revocation_lag_seconds", subscriber.id) == 0
