"""Fixtures of the relay tests: consent writes, a broker behind a proxy, event checks."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import select

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.services.consents import Actor, amend_consent, revoke_consent
from consent_service.timefmt import utcnow
from tests.conftest import REPO_ROOT
from tests.factories import grant
from tests.support.broker import BrokerBehindProxy, start_broker

SCHEMAS = {
    path.name.removesuffix(".v1.json"): Draft202012Validator(json.loads(path.read_text()))
    for path in (REPO_ROOT / "schemas" / "events").glob("consent.*.v1.json")
}
CE_HEADERS = {"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_subject", "ce_time"}


class Writes:
    """Consent changes through the real services, one committed transaction each."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def grant(
        self,
        organization: str = "practice-a",
        *,
        valid_until: datetime | None = None,
        now: datetime | None = None,
    ) -> str:
        now = now or utcnow()
        with self.database.transaction() as session:
            data = grant(
                session,
                organization=organization,
                valid_from=now - timedelta(days=1) if valid_until else None,
                valid_until=valid_until,
                now=now,
            )
        consent_id: str = data["id"]
        return consent_id

    def amend(self, consent_id: str, version: int, organization: str = "practice-a") -> None:
        with self.database.transaction() as session:
            amend_consent(
                session,
                actor=Actor(name="client:test", organization=organization),
                consent_id=consent_id,
                expected_version=version,
                changes={"purposes": ["referral"]},
                now=utcnow(),
            )

    def revoke(self, consent_id: str, organization: str = "practice-a") -> None:
        with self.database.transaction() as session:
            revoke_consent(
                session,
                actor=Actor(name="client:test", organization=organization),
                consent_id=consent_id,
                reason="patient withdrew",
                now=utcnow(),
            )

    def outbox(self) -> list[OutboxEvent]:
        with self.database.reading() as session:
            return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


@pytest.fixture
def writes(database: Database) -> Writes:
    return Writes(database)


@pytest.fixture(scope="session")
def broker() -> Iterator[BrokerBehindProxy]:
    """One Tansu broker for the session; each test uses its own topic."""
    running = start_broker()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def proxy(broker: BrokerBehindProxy) -> Iterator[Any]:
    """The broker's proxy, restored to normal after the test whatever it did."""
    yield broker.proxy
    broker.proxy.restore()


@pytest.fixture
def topic() -> str:
    return f"consent.events.t{uuid.uuid4().hex[:10]}"


def header_map(record: Any) -> dict[str, bytes]:
    return dict(record.headers)


def check_records(records: list[Any]) -> dict[str, list[int]]:
    """Assert the contract on consumed records; return each consent's versions as seen.

    Headers and key match the data, the data is valid against its JSON
    Schema, duplicates are byte-identical to the first copy.
    """
    first_copy: dict[bytes, Any] = {}
    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        headers = header_map(record)
        assert set(headers) >= CE_HEADERS
        assert headers["content-type"] == b"application/json"
        assert headers["ce_specversion"] == b"1.0"
        data = json.loads(record.value)
        SCHEMAS[headers["ce_type"].decode()].validate(data)
        assert headers["ce_type"].decode() == f"consent.{data['change']}"
        assert record.key.decode() == data["id"] == headers["ce_subject"].decode()
        assert headers["ce_source"].decode() == f"/organizations/{data['organization']}"
        event_id = headers["ce_id"]
        if event_id in first_copy:
            earlier = first_copy[event_id]
            assert (earlier.key, earlier.value, earlier.headers) == (
                record.key,
                record.value,
                record.headers,
            )
        else:
            first_copy[event_id] = record
            seen[data["id"]].append(data["version"])
    return dict(seen)


def assert_in_order(seen: dict[str, list[int]], expected_versions: dict[str, int]) -> None:
    """Every consent's versions 1..n arrived, first copies in version order."""
    assert set(seen) == set(expected_versions)
    for consent_id, versions in seen.items():
        assert versions == list(range(1, expected_versions[consent_id] + 1)), consent_id
