"""Fixtures of the kit's tests: a real Tansu broker and a producer that writes like the relay."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kit_helpers import record, tansu


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """One broker for the session; each test gets its own topic."""
    with tansu() as (address, _):
        yield address


@pytest.fixture
def topic(broker: str) -> str:
    """A fresh three-partition topic per test, so tests never see each other's events."""
    name = f"consent.events.test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    return name


@pytest.fixture
def producer(broker: str) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=0)
    yield producer
    producer.close()


@pytest.fixture
def publish(producer: KafkaProducer, topic: str) -> Callable[..., str]:
    """Publish one snapshot like the relay does and return its event id."""

    def publish(data: dict[str, Any], event_id: str | None = None) -> str:
        event_id = event_id or str(uuid.uuid4())
        key, value, headers = record(data, event_id)
        producer.send(topic, key=key, value=value, headers=headers).get(timeout=10)
        return event_id

    return publish
