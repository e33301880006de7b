"""Relay throughput next to a raw kafka-python producer, and commit-to-broker latency.

Same broker (Tansu, started here on loopback), same payloads, same run:

- raw: a KafkaProducer with the relay's own settings sends the records the
  relay would build from the outbox (headers, key, value), then flushes;
- relay: ``Relay.run_once`` drains the same outbox (sequence, read,
  validate, publish, wait for acks=all, mark published);
- latency: grants committed at a steady rate while the relay loop runs;
  time from each commit to the broker's acknowledgement, p50 / p99.

Rounds alternate raw and relay; the ratio is the median of the per-round
ratios. Targets: relay/raw >= 0.5, commit-to-broker p99 < 100 ms. Runs on
SQLite, and on PostgreSQL when a server is named (a scratch database is
created and dropped). Writes a results file (``results.py``).

    python benchmarks/relay_throughput.py [--events 10000] [--rounds 3]
        [--backends sqlite,postgresql] [--postgres-url postgresql+psycopg://...]
        [--quick] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from sqlalchemy import select, update

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import results  # the sibling modules: this script's directory is on sys.path
import scratch

from consent_service.config import Settings
from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.outbox.envelope import Envelope
from consent_service.outbox.lease import lease_for
from consent_service.outbox.publisher import KafkaPublisher, producer_config
from consent_service.outbox.relay import Relay, RelayOptions
from consent_service.services.consents import Actor, grant_consent
from consent_service.timefmt import utcnow
from tests.support.broker import start_broker

ACTOR = Actor(name="client:bench", organization="practice-bench")


def grant(session: Any) -> str:
    data = grant_consent(
        session,
        actor=ACTOR,
        patient_id=f"pat-{uuid.uuid4().hex[:12]}",
        practitioner_id="rpps:10003456789",
        categories=["dental-chart", "radiographs", "treatment-plan"],
        purposes=["care-coordination", "referral"],
        decision="permit",
        valid_from=None,
        valid_until=None,
        collection={"method": "paper", "evidence_ref": "scan-42", "policy_version": "2026-01"},
        now=utcnow(),
    )
    consent_id: str = data["id"]
    return consent_id


def seed(database: Database, count: int) -> None:
    for start in range(0, count, 500):
        with database.transaction() as session:
            for _ in range(min(500, count - start)):
                grant(session)


def settings_for(database: Database, bootstrap: str, topic: str) -> Settings:
    return Settings(
        database_url=database.url,
        kafka_bootstrap_servers=(bootstrap,),
        kafka_topic=topic,
        kafka_partitions=6,
        kafka_replication=1,
    )


def raw_round(database: Database, bootstrap: str, topic: str) -> float:
    """Events/s of a bare producer sending the relay's records."""
    envelope = Envelope()
    with database.reading() as session:
        rows = session.scalars(select(OutboxEvent).order_by(OutboxEvent.position)).all()
    messages = [envelope.message(row, topic) for row in rows]
    settings = settings_for(database, bootstrap, topic)
    KafkaPublisher(settings).ensure_topic(topic)
    producer = KafkaProducer(**producer_config(settings, delivery_timeout_s=15))
    started = time.perf_counter()
    for message in messages:
        producer.send(topic, key=message.key, value=message.value, headers=list(message.headers))
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(messages) / elapsed


def relay_round(database: Database, bootstrap: str, topic: str) -> float:
    """Events/s of the relay draining the whole outbox."""
    with database.transaction() as session:
        session.execute(update(OutboxEvent).values(published_at=None))
    with database.reading() as session:
        count = len(session.scalars(select(OutboxEvent.id)).all())
    settings = settings_for(database, bootstrap, topic)
    publisher = KafkaPublisher(settings)
    publisher.ensure_topic(topic)
    relay = Relay(database, publisher, lease_for(database), options=RelayOptions(topic=topic))
    started = time.perf_counter()
    while relay.run_once():
        pass
    elapsed = time.perf_counter() - started
    publisher.close(5)
    return count / elapsed


def latency_round(database: Database, bootstrap: str, rate: int, seconds: float) -> list[float]:
    """Commit-to-acknowledgement delays (ms) of grants written at ``rate``/s."""
    topic = f"bench.latency.{uuid.uuid4().hex[:6]}"
    committed: dict[str, float] = {}
    acknowledged: dict[str, float] = {}

    def on_ack(rows: Any) -> None:
        now = time.perf_counter()
        for row in rows:
            acknowledged.setdefault(row.consent_id, now)

    publisher = KafkaPublisher(settings_for(database, bootstrap, topic))
    publisher.ensure_topic(topic)
    relay = Relay(
        database,
        publisher,
        lease_for(database),
        options=RelayOptions(topic=topic, expiry_interval=3600),
        on_acknowledged=on_ack,
    )
    with database.transaction() as session:
        session.execute(update(OutboxEvent).values(published_at=utcnow()))
    stop = threading.Event()
    loop = threading.Thread(target=relay.run, args=(stop,))
    loop.start()
    wait_until(lambda: relay.heartbeat.role == "active", timeout=30)
    # The first record connects the producer: not part of the measurement.
    with database.transaction() as session:
        grant(session)
    wait_until(lambda: bool(acknowledged), timeout=30)
    acknowledged.clear()
    interval = 1 / rate
    deadline = time.perf_counter() + seconds
    next_at = time.perf_counter()
    while time.perf_counter() < deadline:
        with database.transaction() as session:
            consent_id = grant(session)
        committed[consent_id] = time.perf_counter()
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))
    wait_until(lambda: committed.keys() <= acknowledged.keys(), timeout=30)
    stop.set()
    loop.join()
    return [(acknowledged[c] - t) * 1000 for c, t in committed.items() if c in acknowledged]


def wait_until(condition: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not get there in time")
        time.sleep(0.01)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(url: str, args: argparse.Namespace) -> tuple[list[float], list[float], list[float]]:
    """Alternated raw and relay rounds, then the latency run, on one database."""
    database = Database(url)
    broker = start_broker()
    try:
        seed(database, args.events)
        raw, relayed = [], []
        for number in range(args.rounds):
            raw.append(raw_round(database, broker.bootstrap, f"bench.raw.{number}"))
            relayed.append(relay_round(database, broker.bootstrap, f"bench.relay.{number}"))
        delays = latency_round(database, broker.bootstrap, args.rate, args.seconds)
    finally:
        broker.stop()
        database.dispose()
    return raw, relayed, delays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--backends", type=lambda v: v.split(","))
    parser.add_argument("--postgres-url", default=scratch.default_postgres_url())
    parser.add_argument("--rate", type=int, default=100, help="grants/s in the latency run")
    parser.add_argument("--seconds", type=float, help="length of the latency run")
    results.add_arguments(parser)
    args = parser.parse_args(argv)
    args.events = args.events or (500 if args.quick else 10_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.seconds = args.seconds or (2.0 if args.quick else 10.0)
    backends = args.backends or (["sqlite", "postgresql"] if args.postgres_url else ["sqlite"])
    run = results.Run(
        "relay_throughput",
        quick=args.quick,
        settings={key: getattr(args, key) for key in ("events", "rounds", "rate", "seconds")},
    )
    for backend in backends:
        with (
            tempfile.TemporaryDirectory() as scratch_dir,
            scratch.database_url(
                backend, Path(scratch_dir), args.postgres_url, f"consent_bench_relay_{os.getpid()}"
            ) as url,
        ):
            raw, relayed, delays = measure(url, args)
        # Each ratio is the median of per-round ratios: only side-by-side figures compare.
        ratio = statistics.median(r / w for r, w in zip(relayed, raw, strict=True))
        run.add(
            "relay / raw producer",
            ratio,
            target=">= 0.5",
            database=backend,
            detail=f"{statistics.median(relayed):,.0f} / {statistics.median(raw):,.0f} events/s",
        )
        run.add(
            "commit to broker p99",
            percentile(delays, 0.99),
            unit="ms",
            target="< 100",
            database=backend,
            detail=f"p50 {percentile(delays, 0.5):.1f} ms, {len(delays)} grants at {args.rate}/s",
        )
    path = run.save(args.results_dir)
    print(f"\nrelay benchmark: {args.events} events, {args.rounds} rounds, Tansu; {path}\n")
    print(run.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
