"""The issue's ten delivery scenarios against a real Kafka-protocol broker (Tansu).

Each asserts on what a consumer read from the topic: every committed event
present, duplicates byte-identical (same ``ce_id``), each consent's versions
first seen in order, data valid against ``schemas/events``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from consent_service.config import Settings
from consent_service.db.models import ConsentVersion, OutboxEvent
from consent_service.db.session import Database
from consent_service.outbox import relay_metrics
from consent_service.outbox.envelope import Message
from consent_service.outbox.lease import lease_for
from consent_service.outbox.publisher import KafkaPublisher
from consent_service.outbox.relay import Relay, RelayOptions
from consent_service.services.consents import Actor, revoke_consent
from consent_service.services.errors import DomainError
from consent_service.services.expiry import expire_due
from consent_service.timefmt import utcnow
from tests.conftest import REPO_ROOT, TEST_SECRET_KEYS, consent_body
from tests.relay.conftest import Writes, assert_in_order, check_records, header_map
from tests.support.broker import BrokerBehindProxy, Proxy, consume, free_port
from tests.support.waiting import wait_until


def relay_settings(database: Database, bootstrap: str, topic: str) -> Settings:
    return Settings(
        database_url=database.url,
        kafka_bootstrap_servers=(bootstrap,),
        kafka_topic=topic,
        kafka_partitions=3,
        kafka_replication=1,
        secret_keys=TEST_SECRET_KEYS,
    )


@contextmanager
def running_relay(
    database: Database,
    broker: BrokerBehindProxy,
    topic: str,
    *,
    delivery_timeout_s: float = 4.0,
    **options: Any,
) -> Iterator[Relay]:
    """An in-process relay on its own thread, stopped (and checked stopped) on exit."""
    publisher = KafkaPublisher(
        relay_settings(database, broker.bootstrap, topic), delivery_timeout_s=delivery_timeout_s
    )
    defaults: dict[str, Any] = {
        "idle_sleep": 0.01,
        "backoff_initial": 0.2,
        "backoff_max": 1.0,
    }
    relay = Relay(
        database,
        publisher,
        lease_for(database),
        options=RelayOptions(topic=topic, **{**defaults, **options}),
    )
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), name="relay")
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "relay did not stop within its bound"


def backlog(database: Database) -> int:
    with database.reading() as session:
        count: int = (
            session.scalar(select(func.count()).where(OutboxEvent.published_at.is_(None))) or 0
        )
        return count


def rounds_pass(relay: Relay, rounds: int = 2, timeout: float = 30) -> None:
    """Return once the relay's loop has completed ``rounds`` more rounds from now.

    A heartbeat marks the start of each round, so ``rounds + 1`` beats after
    this call prove ``rounds`` whole rounds ran after it.
    """
    for _ in range(rounds + 1):
        wait_until(partial(beat_since, relay, time.monotonic()), timeout, "a relay round")


def beat_since(relay: Relay, instant: float) -> bool:
    return time.monotonic() - relay.heartbeat.age() > instant


def expected_versions(writes: Writes) -> dict[str, int]:
    latest: dict[str, int] = {}
    for row in writes.outbox():
        latest[row.consent_id] = max(latest.get(row.consent_id, 0), row.consent_version)
    return latest


def consume_all(broker: BrokerBehindProxy, topic: str, writes: Writes) -> list[Any]:
    return consume(broker.bootstrap, topic, expected=len(writes.outbox()))


def ce_ids(records: list[Any]) -> list[bytes]:
    return [header_map(record)["ce_id"] for record in records]


# 1 ---------------------------------------------------------------------------


def test_every_event_consumed_once_with_contract_and_order(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str
) -> None:
    consents = [writes.grant() for _ in range(60)]
    for consent_id in consents[:30]:
        writes.amend(consent_id, 1)
    for consent_id in consents[:15]:
        writes.revoke(consent_id)
    with running_relay(database, broker, topic):
        wait_until(lambda: backlog(database) == 0, 30, "backlog to drain")
    records = consume_all(broker, topic, writes)
    assert len(records) == len(writes.outbox()) == 105
    assert len(set(ce_ids(records))) == len(records)
    assert_in_order(check_records(records), expected_versions(writes))
    # Valid CloudEvents for the SDK's own Kafka binding, with our id and time.
    record = records[0]
    message = KafkaMessage(headers=header_map(record), key=record.key, value=record.value)
    event = from_binary_event(message)
    assert event.get_id() == header_map(record)["ce_id"].decode()
    assert event.get_subject() == record.key.decode()
    assert event.get_data() == json.loads(record.value)


def test_per_organization_topics_on_the_broker(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str
) -> None:
    writes.grant("practice-a")
    writes.grant("clinic-b")
    with running_relay(database, broker, topic, topic_mode="per-organization"):
        wait_until(lambda: backlog(database) == 0, 30, "backlog to drain")
    for organization in ("practice-a", "clinic-b"):
        (record,) = consume(broker.bootstrap, f"{topic}.{organization}", expected=1)
        assert json.loads(record.value)["organization"] == organization


# 2 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_broker_down_while_the_api_accepts_writes(
    database: Database,
    writes: Writes,
    broker: BrokerBehindProxy,
    proxy: Proxy,
    topic: str,
    client: FlaskClient,
    auth: dict[str, str],
) -> None:
    writes.grant()
    failures = relay_metrics.FAILURES.labels("broker")
    with running_relay(database, broker, topic, delivery_timeout_s=2.0):
        wait_until(lambda: backlog(database) == 0, 30, "first event out")
        failed_before = failures._value.get()
        proxy.cut()
        created = []
        for _ in range(20):
            answer = client.post("/v1/consents", json=consent_body(), headers=auth)
            assert answer.status_code == 201
            created.append(answer.get_json()["id"])
        for consent_id in created[:10]:
            answer = client.post(
                f"/v1/consents/{consent_id}/revoke", json={"reason": "withdrawn"}, headers=auth
            )
            assert answer.status_code == 200
        # The relay tried to send them during the outage, and none went out.
        wait_until(lambda: failures._value.get() > failed_before, 30, "a failed send")
        assert backlog(database) == 30
        ready = client.get("/readyz").get_json()
        assert ready["outbox"]["backlog"] == 30
        proxy.restore()
        wait_until(lambda: backlog(database) == 0, 60, "backlog to drain after the outage")
    records = consume_all(broker, topic, writes)
    assert set(ce_ids(records)) == {row.event_id.encode() for row in writes.outbox()}
    assert_in_order(check_records(records), expected_versions(writes))
    assert client.get("/readyz").get_json()["outbox"]["backlog"] == 0


# 3 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_after_ack_before_mark_resends_the_same_ids(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str
) -> None:
    for _ in range(50):
        writes.grant()
    process = subprocess.run(
        [sys.executable, "-m", "tests.relay.kill_after_ack", database.url, broker.bootstrap, topic],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-2000:]
    assert backlog(database) == 50  # acknowledged, never marked
    acknowledged_before_kill = consume(broker.bootstrap, topic, expected=20)
    assert len(acknowledged_before_kill) == 20
    with running_relay(database, broker, topic):
        wait_until(lambda: backlog(database) == 0, 30, "backlog to drain after restart")
    records = consume_all(broker, topic, writes)
    ids = ce_ids(records)
    assert len(set(ids)) == len(writes.outbox()) == 50
    assert len(ids) == 70  # the killed batch went out twice, with the same ids
    assert_in_order(check_records(records), expected_versions(writes))


# 4 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_connection_reset_in_the_middle_of_a_large_batch(
    database: Database, writes: Writes, broker: BrokerBehindProxy, proxy: Proxy, topic: str
) -> None:
    with database.transaction() as session:
        # One transaction for 2,000 grants: this test is about the relay.
        bulk = Writes(database)
        bulk.database = _SessionDatabase(session)  # type: ignore[assignment]
        for _ in range(2000):
            bulk.grant()
    resets_before = proxy.resets
    proxy.reset_after(300_000)  # a few hundred records into the first batches
    with running_relay(database, broker, topic, batch_size=1000):
        wait_until(lambda: backlog(database) == 0, 90, "backlog to drain after the reset")
    assert proxy.resets > resets_before
    records = consume_all(broker, topic, writes)
    assert set(ce_ids(records)) == {row.event_id.encode() for row in writes.outbox()}
    assert_in_order(check_records(records), expected_versions(writes))


class _SessionDatabase:
    """Lets ``Writes`` add to one open session instead of committing each grant."""

    def __init__(self, session: Any) -> None:
        self._session = session

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        yield self._session


# 5 ---------------------------------------------------------------------------


def test_late_commit_with_a_lower_outbox_id_is_published(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str
) -> None:
    if database.is_sqlite:
        pytest.skip("SQLite writers are serialised (BEGIN IMMEDIATE): ids follow commits")
    with running_relay(database, broker, topic):
        with database.transaction() as session:
            late = Writes(database)
            late.database = _SessionDatabase(session)  # type: ignore[assignment]
            late_consent = late.grant()
            session.flush()
            late_id = session.scalar(
                select(OutboxEvent.id).where(OutboxEvent.consent_id == late_consent)
            )
            early_consent = writes.grant()  # its own transaction, commits first
            wait_until(lambda: backlog(database) == 0, 30, "the early event out")
        (early_row,) = [row for row in writes.outbox() if row.consent_id == early_consent]
        assert late_id is not None and late_id < early_row.id
        wait_until(lambda: backlog(database) == 0, 30, "the late event out")
    records = consume_all(broker, topic, writes)
    assert sorted(json.loads(r.value)["id"] for r in records) == sorted(
        [early_consent, late_consent]
    )


# 6 and 7: relays as separate processes ----------------------------------------


@contextmanager
def relay_processes(
    database: Database, broker: BrokerBehindProxy, topic: str, count: int, log_dir: Path
) -> Iterator[list[tuple[subprocess.Popen[bytes], int]]]:
    """``consent-service relay`` processes, each with its metrics port."""
    processes = []
    for number in range(count):
        port = free_port()
        env = {
            **os.environ,
            "CONSENT_DATABASE_URL": database.url,
            "CONSENT_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "CONSENT_KAFKA_TOPIC": topic,
            "CONSENT_KAFKA_PARTITIONS": "3",
            "CONSENT_KAFKA_REPLICATION": "1",
            "CONSENT_RELAY_METRICS_PORT": str(port),
            "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0],
        }
        log = (log_dir / f"relay-{number}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from consent_service.cli import main; main()",
                "relay",
                "--metrics-host",
                "127.0.0.1",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append((process, port))
    try:
        yield processes
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise AssertionError("a relay did not stop within 30 s of SIGTERM") from None


def role(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            found: str = json.load(answer)["role"]
            return found
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.postgres
def test_three_relays_on_postgres_one_publishes_takeover_after_kill(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str, tmp_path: Path
) -> None:
    if database.is_sqlite:
        pytest.skip("PostgreSQL advisory-lock lease")
    consents = [writes.grant() for _ in range(200)]
    with relay_processes(database, broker, topic, 3, tmp_path) as processes:
        wait_until(
            lambda: sorted(str(role(port)) for _, port in processes).count("active") == 1,
            30,
            "one active relay",
        )
        for version in range(1, 6):
            for consent_id in consents:
                writes.amend(consent_id, version)
            if version == 2:
                (active,) = [(p, port) for p, port in processes if role(port) == "active"]
                active[0].kill()
                active[0].wait()
                killed_at = time.monotonic()
                survivors = [port for p, port in processes if p is not active[0]]

                def taken_over(ports: list[int] = survivors) -> bool:
                    return any(role(port) == "active" for port in ports)

                wait_until(taken_over, 10, "a standby to take over")
                takeover = time.monotonic() - killed_at
        wait_until(lambda: backlog(database) == 0, 90, "backlog to drain")
        assert [role(port) for _, port in processes].count("active") == 1
    assert takeover < 5
    records = consume_all(broker, topic, writes)
    assert len(writes.outbox()) == 1200
    assert set(ce_ids(records)) == {row.event_id.encode() for row in writes.outbox()}
    assert_in_order(check_records(records), expected_versions(writes))


@pytest.mark.slow
def test_two_relays_on_one_sqlite_file_never_double_publish(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str, tmp_path: Path
) -> None:
    if not database.is_sqlite:
        pytest.skip("the SQLite file lock")
    with relay_processes(database, broker, topic, 2, tmp_path) as processes:
        wait_until(
            lambda: sorted(str(role(port)) for _, port in processes) == ["active", "standby"],
            30,
            "one active relay and one waiting",
        )
        consents = [writes.grant() for _ in range(150)]
        for consent_id in consents[:100]:
            writes.revoke(consent_id)
        wait_until(lambda: backlog(database) == 0, 60, "backlog to drain")
    records = consume_all(broker, topic, writes)
    assert len(records) == len(set(ce_ids(records))) == 250  # exactly once: no double publish
    assert_in_order(check_records(records), expected_versions(writes))
    logs = "".join(path.read_text() for path in tmp_path.glob("relay-*.log"))
    assert "database is locked" not in logs
    assert "Traceback" not in logs


# 8 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_grant_then_revoke_with_a_failed_first_send(
    database: Database, writes: Writes, broker: BrokerBehindProxy, proxy: Proxy, topic: str
) -> None:
    warm_up = writes.grant()
    failures = relay_metrics.FAILURES.labels("broker")
    with running_relay(database, broker, topic, delivery_timeout_s=2.0):
        wait_until(lambda: backlog(database) == 0, 30, "warm-up event out")
        failed_before = failures._value.get()
        proxy.cut()
        consent_id = writes.grant()
        writes.revoke(consent_id)
        wait_until(lambda: failures._value.get() > failed_before, 30, "a failed send")
        proxy.restore()
        wait_until(lambda: backlog(database) == 0, 30, "backlog to drain")
    records = consume_all(broker, topic, writes)
    changes = [json.loads(r.value)["change"] for r in records if r.key == consent_id.encode()]
    assert changes[0] == "granted" and "revoked" in changes
    assert changes.index("revoked") > changes.index("granted")
    assert_in_order(check_records(records), {warm_up: 1, consent_id: 2})


# 9 ---------------------------------------------------------------------------


def test_poison_row_held_its_consent_waits_others_flow(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str
) -> None:
    poisoned = writes.grant()
    writes.revoke(poisoned)
    healthy = [writes.grant() for _ in range(5)]
    with database.transaction() as session:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.consent_id == poisoned, OutboxEvent.consent_version == 1)
            # A row the writer did not check (written by hand, or before the check existed).
            .values(payload=json.dumps({"id": poisoned, "surprise": True}), validated=False)
        )
    gauge = relay_metrics.PoisonCollector(database)
    with running_relay(database, broker, topic) as relay:
        wait_until(lambda: backlog(database) == 2, 30, "the healthy events out")
        rounds_pass(relay)  # rounds keep going; the held consent must stay put
        rows = {(row.consent_id, row.consent_version): row for row in writes.outbox()}
        held, waiting = rows[(poisoned, 1)], rows[(poisoned, 2)]
        assert held.held_at is not None and held.attempts == 1
        assert "schema" in (held.last_error or "")
        assert waiting.published_at is None and waiting.held_at is None
        (metric,) = list(gauge.collect())
        assert metric.samples[0].value == 1
        records = consume(broker.bootstrap, topic, expected=5)
        assert {r.key.decode() for r in records} == set(healthy)
        # An operator repairs the row and releases it: the consent flows, in order.
        with database.transaction() as session:
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == held.id)
                .values(payload=_snapshot_payload(database, poisoned, 1), held_at=None)
            )
        wait_until(lambda: backlog(database) == 0, 30, "the released consent out")
    records = consume_all(broker, topic, writes)
    assert_in_order(check_records(records), expected_versions(writes))


def _snapshot_payload(database: Database, consent_id: str, version: int) -> str:
    from consent_service.services.consents import snapshot

    with database.reading() as session:
        row = session.scalars(
            select(ConsentVersion).where(
                ConsentVersion.consent_id == consent_id, ConsentVersion.version == version
            )
        ).one()
        return json.dumps(snapshot(row), separators=(",", ":"))


# 10 --------------------------------------------------------------------------


def test_expiry_racing_a_revoke_exactly_one_wins(
    database: Database, writes: Writes, broker: BrokerBehindProxy, topic: str
) -> None:
    now = utcnow()
    consents = [writes.grant(valid_until=now - timedelta(seconds=1)) for _ in range(40)]
    revoked: list[str] = []

    def revoke_all() -> None:
        for consent_id in consents:
            try:
                with database.transaction() as session:
                    revoke_consent(
                        session,
                        actor=Actor(name="client:test", organization="practice-a"),
                        consent_id=consent_id,
                        reason="withdrawn",
                        now=utcnow(),
                    )
                revoked.append(consent_id)
            except DomainError:
                pass  # expiry got there first: 409, as the API would answer

    racers = [threading.Thread(target=revoke_all)] + [
        threading.Thread(target=expire_due, args=(database,)) for _ in range(2)
    ]
    with running_relay(database, broker, topic, expiry_interval=0.05):
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        expire_due(database)
        wait_until(lambda: backlog(database) == 0, 30, "backlog to drain")
    with database.reading() as session:
        versions = session.execute(
            select(ConsentVersion.consent_id, ConsentVersion.version, ConsentVersion.change)
        ).all()
    final = {(c, v): change for c, v, change in versions}
    for consent_id in consents:
        assert (consent_id, 3) not in final  # exactly one change after the grant
        expected = "revoked" if consent_id in revoked else "expired"
        assert final[(consent_id, 2)] == expected
    records = consume_all(broker, topic, writes)
    assert_in_order(check_records(records), dict.fromkeys(consents, 2))


# Shutdown -------------------------------------------------------------------


def test_closing_with_records_in_flight_neither_raises_nor_hangs(
    broker: BrokerBehindProxy, proxy: Proxy, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """kafka-python's close raises when a flush misses its deadline; ours must not."""
    settings = Settings(
        database_url="sqlite://",
        kafka_bootstrap_servers=(broker.bootstrap,),
        kafka_topic=topic,
        kafka_partitions=3,
        kafka_replication=1,
        secret_keys=TEST_SECRET_KEYS,
    )
    publisher = KafkaPublisher(settings, delivery_timeout_s=2.0)
    publisher.ensure_topic(topic)
    first = Message(topic=topic, key=b"consent-1", value=b"{}", headers=())
    assert publisher.publish([first])[0].acknowledged
    proxy.stall()
    publisher._connect().send(topic, key=b"consent-2", value=b"{}")  # in flight, not flushed
    started = time.monotonic()
    publisher.close(0.2)
    assert time.monotonic() - started < 5
    assert "records in flight at close" in caplog.text
    proxy.restore()
    wait_until(
        lambda: not any(thread.name == "kafka-close" for thread in threading.enumerate()),
        30,
        "the producer to finish closing aside",
    )
