"""The relay's logic with the in-memory publisher, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from consent_service.db.models import Consent, ConsentVersion, OutboxEvent
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.outbox.envelope import Envelope, Message, PoisonEvent
from consent_service.outbox.lease import FileLease, PostgresLease, lease_for
from consent_service.outbox.publisher import InMemoryPublisher, PublishError
from consent_service.outbox.relay import Relay, RelayOptions
from consent_service.outbox.relay_metrics import Heartbeat, serve_metrics
from consent_service.outbox.validation import InvalidEventData
from consent_service.outbox.writer import add_event
from consent_service.services.consents import Actor
from consent_service.services.emergency import open_emergency_access
from consent_service.services.expiry import expire_due
from consent_service.services.requests import create_request
from consent_service.timefmt import utcnow
from tests.relay.conftest import Writes, assert_in_order, check_records
from tests.support.waiting import wait_until

TOPIC = "consent.events"


class Record:
    """A published message in the shape of a consumed record, for ``check_records``."""

    def __init__(self, message: Message) -> None:
        self.key = message.key
        self.value = message.value
        self.headers = list(message.headers)


def make_relay(database: Database, publisher: Any = None, **options: Any) -> Relay:
    return Relay(
        database,
        publisher if publisher is not None else InMemoryPublisher(),
        lease_for(database),
        options=RelayOptions(**options),
    )


def drain(relay: Relay) -> None:
    while relay.run_once():
        pass


def test_publishes_every_event_once_with_the_contract(database: Database, writes: Writes) -> None:
    publisher = InMemoryPublisher()
    relay = make_relay(database, publisher)
    consents = [writes.grant() for _ in range(5)]
    writes.revoke(consents[0])
    drain(relay)
    drain(relay)
    records = [Record(message) for message in publisher.topics[TOPIC]]
    assert len(records) == 6
    assert_in_order(check_records(records), {c: 2 if c == consents[0] else 1 for c in consents})
    assert all(row.published_at is not None for row in writes.outbox())


def test_one_version_per_consent_per_round(database: Database, writes: Writes) -> None:
    """Version n+1 goes out only once version n was acknowledged."""
    publisher = InMemoryPublisher()
    relay = make_relay(database, publisher)
    consent_id = writes.grant()
    writes.amend(consent_id, 1)
    writes.revoke(consent_id)
    for expected in (1, 2, 3):
        assert relay.run_once() == 1
        assert len(publisher.sent) == expected
    versions = [json.loads(message.value)["version"] for message in publisher.sent]
    assert versions == [1, 2, 3]


def test_broker_down_keeps_rows_and_resends_identical_bytes(
    database: Database, writes: Writes
) -> None:
    publisher = InMemoryPublisher(fail_rounds=1)
    relay = make_relay(database, publisher)
    writes.grant()
    # The first round fails before the broker took anything: nothing is marked.
    with pytest.raises(PublishError):
        relay.run_once()
    assert all(row.published_at is None for row in writes.outbox())
    drain(relay)
    (message,) = publisher.sent
    (row,) = writes.outbox()
    assert row.published_at is not None
    assert message == Envelope().message(row, TOPIC)


def test_failed_message_counts_an_attempt_and_is_retried(
    database: Database, writes: Writes
) -> None:
    class FlakyOnce(InMemoryPublisher):
        def publish(self, messages: Any) -> Any:
            if self.rounds == 0:
                self.rounds += 1
                from consent_service.outbox.publisher import Outcome

                return [Outcome(acknowledged=False, error="timed out") for _ in messages]
            return super().publish(messages)

    publisher = FlakyOnce()
    relay = make_relay(database, publisher)
    writes.grant()
    with pytest.raises(PublishError):
        relay.run_once()
    (row,) = writes.outbox()
    assert (row.attempts, row.last_error, row.published_at) == (1, "timed out", None)
    drain(relay)
    assert len(publisher.sent) == 1


def test_poison_row_is_held_and_blocks_only_its_consent(database: Database, writes: Writes) -> None:
    publisher = InMemoryPublisher()
    relay = make_relay(database, publisher)
    poisoned = writes.grant()
    writes.revoke(poisoned)
    healthy = writes.grant()
    with database.transaction() as session:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.consent_id == poisoned, OutboxEvent.consent_version == 1)
            # A row the writer did not check: written before the check existed, or by hand.
            .values(payload='{"id": "not the snapshot"}', validated=False)
        )
    drain(relay)
    drain(relay)
    assert [json.loads(m.value)["id"] for m in publisher.sent] == [healthy]
    rows = {(row.consent_id, row.consent_version): row for row in writes.outbox()}
    held = rows[(poisoned, 1)]
    assert held.held_at is not None and held.attempts == 1
    assert held.last_error is not None and "schema" in held.last_error
    # The error names the field and rule, never the offending value.
    assert "not the snapshot" not in held.last_error
    assert rows[(poisoned, 2)].published_at is None and rows[(poisoned, 2)].held_at is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [("{not json", "not UTF-8 JSON"), ('"\ud800"', "not UTF-8 JSON")],
)
def test_unserialisable_payload_is_poison(
    database: Database, writes: Writes, payload: str, reason: str
) -> None:
    writes.grant()
    (row,) = writes.outbox()
    row.payload = payload
    row.validated = False
    with pytest.raises(PoisonEvent, match=reason):
        Envelope().message(row, TOPIC)


def test_rows_are_checked_when_written_and_sent_as_stored(
    database: Database, writes: Writes
) -> None:
    writes.grant()
    (row,) = writes.outbox()
    assert row.validated
    original = Envelope().message(row, TOPIC)
    # A validated row is not parsed again: its stored bytes go out as they are.
    row.payload = row.payload.replace('"version":1', '"version": 1')
    assert Envelope().message(row, TOPIC).value == row.payload.encode()
    row.validated = False
    assert Envelope().message(row, TOPIC).value == row.payload.encode() != original.value


def test_an_emergency_access_event_goes_out_keyed_by_its_access(database: Database) -> None:
    with database.transaction() as session:
        access = open_emergency_access(
            session,
            actor=Actor(name="client:c-1", organization="practice-a"),
            patient_id="pat-1",
            practitioner_id="rpps:10003456789",
            justification="Unconscious patient admitted at night.",
            duration_minutes=30,
            now=utcnow(),
        )
        access_id = access.id
    with database.reading() as session:
        (row,) = session.scalars(select(OutboxEvent)).all()
        session.expunge(row)
    # Checked as an unvalidated row would be (written by hand, or before the check).
    row.validated = False
    message = Envelope().message(row, TOPIC)
    assert message.key == access_id.encode()
    assert ("ce_type", b"consent.emergency-access") in message.headers
    row.consent_version = 2
    with pytest.raises(PoisonEvent, match="does not match"):
        Envelope().message(row, TOPIC)


def test_an_event_failing_its_schema_is_refused_when_written(database: Database) -> None:
    snapshot = {"id": "c-1", "organization": "practice-a", "version": 1, "change": "granted"}
    refused = pytest.raises(InvalidEventData, match=r"fails consent.granted.v1 schema at \(root\)")
    with refused, database.transaction() as session:
        add_event(session, snapshot=snapshot, now=utcnow())
    with database.reading() as session:
        assert session.scalars(select(OutboxEvent)).all() == []


def test_message_refused_by_kafka_is_held(database: Database, writes: Writes) -> None:
    refused = writes.grant()
    publisher = InMemoryPublisher(reject=lambda message: message.key == refused.encode())
    relay = make_relay(database, publisher)
    other = writes.grant()
    drain(relay)
    assert [m.key for m in publisher.sent] == [other.encode()]
    (held,) = [row for row in writes.outbox() if row.held_at is not None]
    assert held.consent_id == refused and "refused by Kafka" in (held.last_error or "")


def test_row_committed_late_with_a_lower_id_is_published(
    database: Database, writes: Writes
) -> None:
    """No id high-water mark: a row that appears below published ids still goes out."""
    publisher = InMemoryPublisher()
    relay = make_relay(database, publisher)
    writes.grant()
    writes.grant()
    drain(relay)
    late_consent = writes.grant()
    (late,) = [row for row in writes.outbox() if row.consent_id == late_consent]
    with database.transaction() as session:
        # Move it below every published id, as a transaction that drew its id
        # early and committed last would leave it.
        session.execute(update(OutboxEvent).where(OutboxEvent.id == late.id).values(id=-1))
    drain(relay)
    assert [json.loads(m.value)["id"] for m in publisher.sent][-1] == late_consent
    assert all(row.published_at is not None for row in writes.outbox())


def test_per_organization_topics(database: Database, writes: Writes) -> None:
    publisher = InMemoryPublisher()
    relay = make_relay(database, publisher, topic="consent.events", topic_mode="per-organization")
    writes.grant("practice-a")
    writes.grant("clinic-b")
    drain(relay)
    assert sorted(publisher.topics) == ["consent.events.clinic-b", "consent.events.practice-a"]


def test_without_kafka_the_relay_orders_but_does_not_mark(
    database: Database, writes: Writes
) -> None:
    relay = Relay(database, None, lease_for(database))
    writes.grant()
    relay.run_once()
    (row,) = writes.outbox()
    assert row.position is not None and row.published_at is None


def test_expiry_expires_once_even_with_concurrent_passes(
    database: Database, writes: Writes
) -> None:
    now = utcnow()
    due = [writes.grant(valid_until=now - timedelta(seconds=1)) for _ in range(20)]
    writes.grant(valid_until=now + timedelta(days=1))
    results: list[int] = []
    passes = [
        threading.Thread(target=lambda: results.append(expire_due(database, page=7)))
        for _ in range(3)
    ]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join()
    assert sum(results) == len(due)
    with database.reading() as session:
        statuses = dict(session.execute(select(Consent.id, Consent.status)).all())
        expired_versions = session.scalars(
            select(ConsentVersion.consent_id).where(ConsentVersion.change == "expired")
        ).all()
    assert sorted(expired_versions) == sorted(due)
    assert {statuses[c] for c in due} == {"expired"}
    assert expire_due(database) == 0
    expired_events = [row for row in writes.outbox() if row.type == "consent.expired"]
    assert len(expired_events) == len(due)


def test_file_lease_is_exclusive_until_released(tmp_path: Any) -> None:
    first, second = FileLease(tmp_path / "lock"), FileLease(tmp_path / "lock")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


@pytest.mark.postgres
def test_postgres_lease_is_exclusive_and_freed_when_its_connection_dies(
    database: Database,
) -> None:
    if database.is_sqlite:
        pytest.skip("PostgreSQL advisory lock")
    first, second = PostgresLease(database, check_interval=0), PostgresLease(database)
    assert first.try_acquire() and not second.try_acquire()
    assert first.is_held()
    # Kill the holder's backend, as a crash of its host would.
    assert first._connection is not None
    pid = first._connection.execute(text("SELECT pg_backend_pid()")).scalar()
    with database.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert not first.is_held()
    assert second.try_acquire()
    second.release()


def test_run_stops_on_signal_and_closes_the_publisher(database: Database, writes: Writes) -> None:
    publisher = InMemoryPublisher()
    relay = make_relay(database, publisher, idle_sleep=0.01)
    stop = threading.Event()
    loop = threading.Thread(target=relay.run, args=(stop,))
    loop.start()
    writes.grant()
    wait_until(lambda: bool(publisher.sent), 30, "the event to be published")
    stop.set()
    loop.join(timeout=5)
    assert not loop.is_alive()
    assert publisher.closed and len(publisher.sent) == 1
    assert relay.lease.try_acquire()  # released on the way out
    relay.lease.release()


class FailingClosePublisher(InMemoryPublisher):
    """A publisher whose ``close`` raises: a broker client failing at shutdown."""

    def close(self, timeout: float) -> None:
        raise RuntimeError("close failed")


def test_a_failing_close_still_frees_the_lease(database: Database) -> None:
    relay = make_relay(database, FailingClosePublisher(), idle_sleep=0.01)
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            relay.run(stop)
        except RuntimeError as error:
            failures.append(error)

    loop = threading.Thread(target=run)
    loop.start()
    wait_until(relay.lease.is_held, 10, "the relay to take the lease")
    stop.set()
    loop.join(timeout=10)
    assert not loop.is_alive() and len(failures) == 1
    standby = lease_for(database)
    assert standby.try_acquire(), "a stopped relay kept the lease"
    standby.release()


def test_metrics_endpoint(database: Database, writes: Writes) -> None:
    heartbeat = Heartbeat()
    heartbeat.beat("active")
    server = serve_metrics(database, heartbeat, host="127.0.0.1", port=0)
    port = server.server_address[1]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as answer:
            assert json.load(answer)["role"] == "active"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as answer:
            body = answer.read().decode()
        for name in (
            "consent_outbox_backlog_events",
            "consent_outbox_oldest_unpublished_age_seconds",
            "consent_relay_published_total",
            "consent_relay_publish_failures_total",
            "consent_relay_poison_events",
            "consent_relay_commit_to_ack_seconds_bucket",
        ):
            assert name in body
    finally:
        server.shutdown()


def test_expiry_pass_closes_overdue_consent_requests(database: Database) -> None:
    asked_at = utcnow() - timedelta(days=2)
    with database.transaction() as session:
        ids = [
            create_request(
                session,
                actor=Actor(name="client:test", organization="practice-a"),
                patient_id="pat-1",
                practitioner_id="rpps:10003456789",
                practitioner_name="Dr Martin",
                practitioner_profession=None,
                organization_name=None,
                categories=["radiographs"],
                purposes=["referral"],
                valid_until=None,
                valid_for_days=None,
                language="fr",
                expires_in=expires_in,
                now=asked_at,
            ).id
            for expires_in in (timedelta(days=1), timedelta(days=7))
        ]
    expire_due(database)
    with database.reading() as session:
        statuses = dict(session.execute(select(ConsentRequest.id, ConsentRequest.status)).all())
    assert statuses == {ids[0]: "expired", ids[1]: "pending"}
