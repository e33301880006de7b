"""Sending relay messages to Kafka, and the in-memory twin used by unit tests.

This is the only module that imports ``kafka``. Its producer is created by
the relay process when it starts publishing, never at import time, so no
broker connection exists before a gunicorn fork.

A ``publish`` call is one round: send every message, wait until each one is
acknowledged or failed (bounded by the producer's delivery timeout), and say
which. The relay marks rows published from that answer only. After a failed
round the producer is thrown away: a fresh one starts without stale records
in its buffer and with a new idempotent producer id. Records the old one
still had in flight when it was dropped (its close cannot cancel them) may
reach the broker later, as byte-identical duplicates of rows the relay sends
again: same ``ce_id``, a version consumers already hold, so they change
nothing (the kit ignores a version not newer than its own).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
)

from consent_service.config import Settings
from consent_service.outbox.envelope import Message

log = logging.getLogger(__name__)

# Errors about one message itself: sending it again cannot succeed.
MESSAGE_REJECTIONS = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError)


class PublishError(Exception):
    """The broker cannot be reached or refuses the round; retry later."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message of a round.

    ``acknowledged``: the broker has it (acks=all). Otherwise ``rejected``
    says the message itself was refused (poison); else a retry may work.
    """

    acknowledged: bool
    rejected: bool = False
    error: str | None = None


ACKNOWLEDGED = Outcome(acknowledged=True)


class Publisher(Protocol):
    def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` if missing, else verify it; raise ``PublishError``."""

    def publish(self, messages: Sequence[Message]) -> list[Outcome]:
        """One outcome per message, in order; ``PublishError`` if none could be tried."""

    def close(self, timeout: float) -> None:
        """Flush what was sent and release the connections, within ``timeout`` s."""


def client_config(settings: Settings) -> dict[str, Any]:
    """Connection settings shared by the producer and the admin client."""
    config: dict[str, Any] = {
        "bootstrap_servers": list(settings.kafka_bootstrap_servers),
        "client_id": "consent-service-relay",
        "security_protocol": settings.kafka_security_protocol,
        "reconnect_backoff_ms": 200,
        "reconnect_backoff_max_ms": 5000,
        "request_timeout_ms": 10_000,
    }
    if settings.kafka_sasl_mechanism:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password
    if settings.kafka_ssl_cafile:
        config["ssl_cafile"] = settings.kafka_ssl_cafile
    return config


def producer_config(settings: Settings, *, delivery_timeout_s: float) -> dict[str, Any]:
    """The producer's settings: idempotent, acks=all, batched for throughput.

    ``enable_idempotence`` and ``acks`` are passed explicitly so that an
    unsafe combination fails at start-up instead of idempotence being
    silently turned off. 128 KB batches and a 5 ms linger reach about 24k
    msg/s on 2 cores (benchmarks/relay_throughput.py, raw producer), while
    adding at most 5 ms of latency.
    """
    delivery_timeout_ms = int(delivery_timeout_s * 1000)
    return {
        **client_config(settings),
        # kafka-python insists on delivery > linger + request timeout.
        "request_timeout_ms": min(10_000, delivery_timeout_ms // 2),
        "enable_idempotence": True,
        "acks": "all",
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "batch_size": 128 * 1024,
        "retry_backoff_ms": 100,
        "max_block_ms": 5000,
        "delivery_timeout_ms": delivery_timeout_ms,
    }


class KafkaPublisher:
    """Publishes to a real Kafka-protocol cluster with kafka-python."""

    def __init__(self, settings: Settings, *, delivery_timeout_s: float = 15.0) -> None:
        self._settings = settings
        self._delivery_timeout_s = delivery_timeout_s
        self._producer: KafkaProducer | None = None
        self._verified_topics: set[str] = set()

    def ensure_topic(self, topic: str) -> None:
        if topic in self._verified_topics:
            return
        settings = self._settings
        try:
            admin = KafkaAdminClient(**client_config(settings))
        except KafkaError as error:
            raise PublishError(f"cannot reach Kafka to check topic {topic}: {error!r}") from None
        try:
            try:
                admin.create_topics(
                    [NewTopic(topic, settings.kafka_partitions, settings.kafka_replication)]
                )
                log.info(
                    "created topic %s: %d partitions, replication %d",
                    topic,
                    settings.kafka_partitions,
                    settings.kafka_replication,
                )
            except TopicAlreadyExistsError:
                self._verify(admin, topic)
            except KafkaError as error:
                # Without the right to create topics, an existing one will do.
                if not self._exists(admin, topic):
                    raise PublishError(f"cannot create topic {topic}: {error!r}") from None
                self._verify(admin, topic)
        finally:
            admin.close()
        self._verified_topics.add(topic)

    def _exists(self, admin: KafkaAdminClient, topic: str) -> bool:
        try:
            return topic in admin.list_topics()
        except KafkaError:
            return False

    def _verify(self, admin: KafkaAdminClient, topic: str) -> None:
        try:
            (description,) = admin.describe_topics([topic])
        except KafkaError as error:
            raise PublishError(f"cannot describe topic {topic}: {error!r}") from None
        partitions = len(description.get("partitions") or [])
        if partitions != self._settings.kafka_partitions:
            # Changing a topic's partitions remaps keys: an operator's decision.
            log.warning(
                "topic %s exists with %d partitions, CONSENT_KAFKA_PARTITIONS says %d; "
                "keeping the topic as it is",
                topic,
                partitions,
                self._settings.kafka_partitions,
            )
        else:
            log.info("topic %s exists with %d partitions", topic, partitions)

    def publish(self, messages: Sequence[Message]) -> list[Outcome]:
        producer = self._connect()
        futures: list[Any] = []
        outcomes: list[Outcome | None] = []
        for message in messages:
            try:
                futures.append(
                    producer.send(
                        message.topic,
                        key=message.key,
                        value=message.value,
                        headers=list(message.headers),
                    )
                )
                outcomes.append(None)
            except MESSAGE_REJECTIONS as error:
                futures.append(None)
                outcomes.append(Outcome(acknowledged=False, rejected=True, error=repr(error)))
            except KafkaError as error:
                # Typically no metadata within max_block_ms: the broker is away.
                self._reset()
                raise PublishError(f"Kafka send failed: {error!r}") from None
        try:
            producer.flush(timeout=self._delivery_timeout_s + 5)
        except KafkaError as error:
            log.warning("Kafka flush did not complete: %r", error)
        result = [
            outcome if outcome is not None else _outcome(future)
            for outcome, future in zip(outcomes, futures, strict=True)
        ]
        if any(not outcome.acknowledged and not outcome.rejected for outcome in result):
            self._reset()
        return result

    def close(self, timeout: float) -> None:
        if self._producer is not None:
            _close(self._producer, timeout, background=self._delivery_timeout_s + 5)
            self._producer = None

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            try:
                self._producer = KafkaProducer(
                    **producer_config(self._settings, delivery_timeout_s=self._delivery_timeout_s)
                )
            except KafkaError as error:
                raise PublishError(f"cannot connect to Kafka: {error!r}") from None
        return self._producer

    def _reset(self) -> None:
        """Drop the producer and whatever it still buffers (see the module docstring)."""
        if self._producer is not None:
            _close(self._producer, 0, background=self._delivery_timeout_s + 5)
            self._producer = None


def _close(producer: KafkaProducer, timeout: float, *, background: float) -> None:
    """Close ``producer`` within ``timeout``, never raising.

    kafka-python's ``close`` flushes first and raises when records are still
    in flight at the deadline, before it stops its sender thread. Those
    records' rows are unmarked, so they are sent again; the producer is
    closed on a thread of its own once its delivery timeout has failed them.
    """
    try:
        producer.close(timeout=timeout)
    except KafkaError as error:
        log.warning("Kafka producer had records in flight at close (%r); closing it aside", error)
        threading.Thread(
            target=_close_aside, args=(producer, background), name="kafka-close", daemon=True
        ).start()


def _close_aside(producer: KafkaProducer, timeout: float) -> None:
    try:
        producer.close(timeout=timeout)
    except KafkaError as error:
        log.error("Kafka producer did not close within %.0f s: %r", timeout, error)


def _outcome(future: Any) -> Outcome:
    if not future.is_done:
        return Outcome(acknowledged=False, error="not acknowledged within the delivery timeout")
    if future.succeeded():
        return ACKNOWLEDGED
    error = future.exception
    return Outcome(
        acknowledged=False, rejected=isinstance(error, MESSAGE_REJECTIONS), error=repr(error)
    )


@dataclass
class InMemoryPublisher:
    """The publisher's twin: keeps messages in lists, fails on demand.

    ``fail_rounds`` makes the next rounds raise ``PublishError`` (broker
    away); ``reject`` marks single messages as refused by the broker.
    """

    topics: dict[str, list[Message]] = field(default_factory=dict)
    fail_rounds: int = 0
    reject: Any = None
    rounds: int = 0
    closed: bool = False

    def ensure_topic(self, topic: str) -> None:
        self.topics.setdefault(topic, [])

    def publish(self, messages: Sequence[Message]) -> list[Outcome]:
        self.rounds += 1
        if self.fail_rounds:
            self.fail_rounds -= 1
            raise PublishError("in-memory broker is down")
        outcomes = []
        for message in messages:
            if self.reject is not None and self.reject(message):
                outcomes.append(Outcome(acknowledged=False, rejected=True, error="rejected"))
                continue
            self.topics.setdefault(message.topic, []).append(message)
            outcomes.append(ACKNOWLEDGED)
        return outcomes

    def close(self, timeout: float) -> None:
        self.closed = True

    @property
    def sent(self) -> list[Message]:
        return [message for messages in self.topics.values() for message in messages]
