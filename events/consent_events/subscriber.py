"""Following the consent topic into the local store.

Consumer discipline (after getsentry/arroyo): poll a batch, apply it to the
store in one durable transaction, and only then commit the *next* offset of
each partition to the consumer group. A crash between the two re-delivers
the batch, which the store recognises by event id and version, so nothing is
missed and nothing is applied twice.

Blocking and shutdown: :meth:`Subscriber.run` blocks the calling thread and
returns once ``stop`` is set, within one poll (``poll_timeout_ms``), after
committing what it applied; :meth:`Subscriber.close` leaves the group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from consent_events.envelope import Event, InvalidEvent, from_kafka_record
from consent_events.feed import Feed
from consent_events.store import APPLIED, DUPLICATE, HELD, REJECTED, STALE, Change, Rejection, Store

logger = logging.getLogger(__name__)

DEFAULT_TOPIC = "consent.events"
# Revocation latency matters: a quiet topic costs up to this per fetch (Kafka default: 500).
DEFAULT_FETCH_MAX_WAIT_MS = 10


class Subscriber:
    """Consumes consent events into a :class:`Store`.

    ``group_id`` names the consumer group whose committed offsets say where
    to resume; every member of a group must write the same store, since the
    offsets describe that store. By default the subscriber joins the group
    (the broker balances partitions among members and moves them when one
    leaves); ``manual_assignment`` takes every partition of the topics
    directly instead, still committing to ``group_id``, which starts
    instantly (a single subscriber, tests). ``organization`` skips other
    organizations' events on a shared topic. When idle, the subscriber
    checks every ``heartbeat_interval`` seconds that the broker answers
    (waiting at most ``probe_timeout_ms``) before it records the store as
    current.
    """

    def __init__(
        self,
        store: Store | str,
        *,
        bootstrap_servers: str | Sequence[str],
        group_id: str,
        topics: Sequence[str] = (DEFAULT_TOPIC,),
        manual_assignment: bool = False,
        organization: str | None = None,
        fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
        max_poll_records: int = 500,
        heartbeat_interval: float = 1.0,
        probe_timeout_ms: int = 2000,
        consumer_config: Mapping[str, Any] | None = None,
        on_change: Callable[[Change], None] | None = None,
    ):
        self.store = store if isinstance(store, Store) else Store(store)
        self.topics = tuple(topics)
        self.group_id = group_id
        self.manual_assignment = manual_assignment
        self.organization = organization
        self.heartbeat_interval = heartbeat_interval
        self.probe_timeout_ms = probe_timeout_ms
        self.on_change = on_change
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "max_poll_records": max_poll_records,
            "client_id": "consent-events",
            **(consumer_config or {}),
        }
        self._consumer: KafkaConsumer | None = None
        self._last_poll_started: float | None = None
        self._last_state_write = 0.0
        self._reported_caught_up = False
        self._poll_failing = False

    # Lifecycle -----------------------------------------------------------

    def start(self, feed: Feed | None = None, *, metadata_timeout: float | None = 30.0) -> None:
        """Connect, and position the group where this store's content ends.

        A store that already follows this group resumes from the group's
        committed offsets. Any other store (new, deleted, in memory, or
        filled by another group) could be missing what those offsets skip,
        so the group is first rewound: to the start of the topic, or, with
        ``feed``, to where the topic ended *before* the feed was read. An
        event committed after the feed's last page is published after that
        point, so it is not lost; one in both is applied once.
        """
        # Every fetch is sent after this instant, so it bounds what the first poll can vouch for.
        self._last_poll_started = time.time()
        consumer = KafkaConsumer(**self._config)
        self._consumer = consumer
        partitions = self._partitions(metadata_timeout)
        if self.store.state().group_id != self.group_id:
            consumer.assign(partitions)
            if feed is None:
                logger.info("new store for group %s: replaying from the start", self.group_id)
                start_at = consumer.beginning_offsets(partitions)
            else:
                consumer.seek_to_end()
                start_at = {tp: consumer.position(tp) for tp in partitions}
                logger.info("new store for group %s: catching up from the feed", self.group_id)
                read = feed.catch_up(self.store, on_change=self._log)
                logger.info("event feed caught up: %d events read", read)
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in start_at.items()})
            self.store.follow_group(self.group_id)
            consumer.unsubscribe()
        if self.manual_assignment:
            consumer.assign(partitions)
        else:
            consumer.subscribe(list(self.topics))

    def run(self, stop: threading.Event, *, poll_timeout_ms: int = 100) -> None:
        """Poll and apply until ``stop`` is set (see the module docstring for shutdown)."""
        if self._consumer is None:
            self.start()
        while not stop.is_set():
            self.poll_once(poll_timeout_ms)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # One step --------------------------------------------------------------

    def poll_once(self, timeout_ms: int = 100) -> list[Change]:
        """Poll one batch, apply it durably, then commit its next offsets; return the changes."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("call start() before poll_once()")
        started = time.time()
        try:
            records = consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as error:
            self._poll_failed(error, timeout_ms)
            return []
        if self._poll_failing:
            logger.info("the broker answers again")
            self._poll_failing = False
        lag_events, caught_up = self._backlog(consumer)
        # The fetch answered in this poll may have been sent during the previous one,
        # so only events published before the previous poll started are surely here.
        current_as_of = self._last_poll_started if caught_up else None
        self._last_poll_started = started
        if not records:
            # Idle: a throttled heartbeat, plus one at once when a backlog has just been cleared.
            due = time.time() - self._last_state_write >= self.heartbeat_interval
            if due or (caught_up and not self._reported_caught_up):
                if caught_up and not self._broker_confirms(consumer):
                    current_as_of = None
                self._write_state(lag_events, current_as_of)
            return []
        batch: list[Event | Rejection] = []
        next_offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, messages in records.items():
            for message in messages:
                origin = f"{tp.topic}/{tp.partition}@{message.offset}"
                try:
                    event = from_kafka_record(message.key, message.value, message.headers)
                except InvalidEvent as error:
                    batch.append(Rejection(error, origin))
                    continue
                if self.organization is None or event.organization == self.organization:
                    batch.append(event)
            next_offsets[tp] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
        changes = self.store.apply(batch, lag_events=lag_events, current_as_of=current_as_of)
        self._last_state_write = time.time()
        self._reported_caught_up = current_as_of is not None
        for change in changes:
            self._log(change)
        self._commit(consumer, next_offsets)
        return changes

    # Helpers -------------------------------------------------------------

    def _partitions(self, timeout: float | None) -> list[TopicPartition]:
        """Every partition of the topics, waiting for the broker to know them.

        The service creates a topic when it first publishes to it, so a
        listener may well start first; ``timeout`` None waits as long as it
        takes, saying so every 30 s.
        """
        consumer = self._consumer
        assert consumer is not None
        started = time.monotonic()
        next_notice = started + 30
        while True:
            found = {topic: consumer.partitions_for_topic(topic) for topic in self.topics}
            if all(found.values()):
                return [
                    TopicPartition(topic, partition)
                    for topic, numbers in found.items()
                    for partition in sorted(numbers or ())
                ]
            missing = ", ".join(topic for topic, numbers in found.items() if not numbers)
            now = time.monotonic()
            if timeout is not None and now - started > timeout:
                raise KafkaError(f"topic not found on the broker: {missing}")
            if now > next_notice:
                logger.warning("waiting for topic %s to exist on the broker", missing)
                next_notice = now + 30
            time.sleep(0.2)

    def _poll_failed(self, error: KafkaError, timeout_ms: int) -> None:
        """Wait out a failed poll; the next one reconnects.

        kafka-python 3 lets a lost connection out of ``poll()`` (a coordinator
        or metadata lookup that found the broker gone). A broker outage must
        delay events, never stop the subscriber: nothing is recorded, so the
        view ages and fails closed until polls succeed again. The wait keeps
        a broker that refuses at once from turning this into a busy loop.
        """
        if not self._poll_failing:
            logger.warning("poll failed, retrying until the broker answers: %s", error)
            self._poll_failing = True
        time.sleep(timeout_ms / 1000)

    def _backlog(self, consumer: KafkaConsumer) -> tuple[int, bool]:
        """Known backlog in events, and whether every assigned partition is read to its end."""
        assigned = consumer.assignment()
        lag = 0
        caught_up = bool(assigned)
        for tp in assigned:
            highwater = consumer.highwater(tp)
            if highwater is None:
                caught_up = False
                continue
            behind = max(0, highwater - consumer.position(tp))
            lag += behind
            caught_up = caught_up and behind == 0
        return lag, caught_up

    def _broker_confirms(self, consumer: KafkaConsumer) -> bool:
        """Whether the broker answers now and has nothing beyond our positions.

        An idle poll cannot tell a quiet topic from an unreachable broker: the
        high watermarks it leaves are those of the last fetch that got an
        answer. Without this round trip a listener cut off from Kafka would
        go on vouching for a view that misses every revocation since.
        """
        assigned = list(consumer.assignment())
        try:
            ends = consumer.end_offsets(assigned, timeout_ms=self.probe_timeout_ms)
        except KafkaError as error:
            logger.warning("the broker does not answer, the view is ageing: %s", error)
            return False
        return all(consumer.position(tp) >= end for tp, end in ends.items())

    def _write_state(self, lag_events: int, current_as_of: float | None) -> None:
        self.store.heartbeat(lag_events=lag_events, current_as_of=current_as_of)
        self._last_state_write = time.time()
        self._reported_caught_up = current_as_of is not None

    def _commit(
        self, consumer: KafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]
    ) -> None:
        try:
            consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            # Safe to go on: the batch is applied, and a re-delivery is recognised as duplicate.
            logger.warning("offset commit failed, events will be re-delivered: %s", error)

    def _log(self, change: Change) -> None:
        if change.outcome == APPLIED:
            logger.info(
                "applied consent=%s version=%s change=%s event=%s",
                change.consent_id,
                change.version,
                change.reason,
                change.event_id,
            )
        elif change.outcome == HELD:
            logger.warning(
                "version gap: consent=%s version=%s held (%s) event=%s",
                change.consent_id,
                change.version,
                change.reason,
                change.event_id,
            )
        elif change.outcome == REJECTED:
            logger.error(
                "rejected event=%s consent=%s: %s",
                change.event_id,
                change.consent_id,
                change.reason,
            )
        elif change.outcome in (DUPLICATE, STALE):
            logger.debug(
                "%s event=%s consent=%s version=%s",
                change.outcome,
                change.event_id,
                change.consent_id,
                change.version,
            )
        if self.on_change is not None:
            self.on_change(change)
