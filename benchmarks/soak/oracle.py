"""What must hold at the end of a soak: nothing lost, in order, every view equal, audit intact.

The topic is read with manual partition assignment (Tansu's group join takes
tens of seconds) and counted as consumed: the broker's ``end_offsets``
under-reports. Re-sends are allowed (the relay publishes at least once), so
order is judged on the first time each version appears.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import create_engine, text

from soak.processes import CLI


def committed(database_url: str) -> tuple[set[tuple[str, int]], dict[str, tuple[int, str]]]:
    """Every committed ``(consent, version)``, and each consent's current version and status."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            versions = {
                (str(row[0]), int(row[1]))
                for row in connection.execute(
                    text("SELECT consent_id, version FROM consent_versions")
                )
            }
            current = {
                str(row[0]): (int(row[1]), str(row[2]))
                for row in connection.execute(text("SELECT id, version, status FROM consents"))
            }
    finally:
        engine.dispose()
    return versions, current


def backlog(database_url: str, before_epoch: float | None = None) -> int:
    """Outbox events not yet published (created before ``before_epoch`` when given)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            query = (
                "SELECT count(*) FROM outbox_events WHERE published_at IS NULL AND held_at IS NULL"
            )
            if before_epoch is None:
                return int(connection.scalar(text(query)) or 0)
            query += " AND created_at < to_timestamp(:before)"
            return int(connection.scalar(text(query), {"before": before_epoch}) or 0)
    finally:
        engine.dispose()


def read_topic(
    bootstrap: str, topic: str, *, expected: int, timeout: float = 120, quiet: float = 3.0
) -> list[Any]:
    """Every record of ``topic``: at least ``expected``, then ``quiet`` s with nothing new."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        request_timeout_ms=20_000,
    )
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] | None = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[Any] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=200, max_records=5000).values():
                records.extend(messages)
                last_new = time.monotonic()
            if len(records) >= expected and time.monotonic() - last_new >= quiet:
                break
        return records
    finally:
        consumer.close()


def judge_topic(records: list[Any], versions: set[tuple[str, int]]) -> dict[str, Any]:
    """Lost versions and consents whose versions first appeared out of order."""
    event_ids: set[str] = set()
    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for record in records:
        headers = dict(record.headers or [])
        event_ids.add(headers.get("ce_id", b"").decode())
        data = json.loads(record.value)
        pair = (str(data["id"]), int(data["version"]))
        if pair not in seen:
            seen.add(pair)
            first_seen[pair[0]].append(pair[1])
    out_of_order = [consent for consent, order in first_seen.items() if order != sorted(order)]
    lost = sorted(versions - seen)
    return {
        "records_on_topic": len(records),
        "distinct_events_on_topic": len(event_ids),
        "lost_events": len(lost),
        "lost_examples": [f"{consent} v{version}" for consent, version in lost[:10]],
        "out_of_order_consents": len(out_of_order),
        "unexpected_on_topic": len(seen - versions),
    }


def subscriber_mismatches(store: Path, current: dict[str, tuple[int, str]]) -> list[str]:
    """Consents whose version or status in the subscriber's store differs from the database."""
    if not store.exists():
        return [f"no store at {store}"]
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT c.consent_id, c.version, v.status FROM consents c "
            "JOIN consent_versions v ON v.consent_id = c.consent_id AND v.version = c.version"
        ).fetchall()
    finally:
        connection.close()
    view = {str(consent): (int(version), str(status)) for consent, version, status in rows}
    problems = [
        f"{consent}: database {current[consent]}, view {view.get(consent)}"
        for consent in current
        if view.get(consent) != current[consent]
    ]
    problems += [f"{consent}: only in the view" for consent in view.keys() - current.keys()]
    return problems


def wait_for_views(
    stores: dict[str, Path], current: dict[str, tuple[int, str]], timeout: float
) -> dict[str, list[str]]:
    """Each subscriber's mismatches, once they are none or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = {}
        for name, store in stores.items():
            try:
                found[name] = subscriber_mismatches(store, current)
            except sqlite3.Error as error:
                found[name] = [f"store unreadable: {error}"]
        if not any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(1)


def audit_verify(env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [CLI, "audit", "verify", "--json", "--data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    try:
        report: Any = json.loads(done.stdout)
    except ValueError:
        report = done.stdout[-2000:]
    return {
        "exit_code": done.returncode,
        "ok": done.returncode == 0,
        "report": report,
        "stderr": done.stderr[-2000:],
    }
