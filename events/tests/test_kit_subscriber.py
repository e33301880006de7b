"""The subscriber against a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConnectionError
from kit_helpers import PATIENT, PRACTITIONER, applied, drain, new_id, record, snapshot, tansu
from tests.support.broker import start_broker
from tests.support.waiting import holds_for, wait_until

from consent_events import ConsentView, StaleViewError, Store, Subscriber
from consent_events.store import APPLIED, DUPLICATE, HELD, REJECTED, STALE, Change


def _subscriber(store: Store, broker: str, topic: str, group: str, **options) -> Subscriber:
    subscriber = Subscriber(
        store,
        bootstrap_servers=broker,
        group_id=group,
        topics=[topic],
        manual_assignment=options.pop("manual_assignment", True),
        **options,
    )
    subscriber.start()
    return subscriber


def _ask(view: ConsentView):
    return view.is_permitted(PATIENT, PRACTITIONER, "radiographs", "care-coordination")


def test_events_are_applied_and_the_next_offset_committed(broker, topic, publish) -> None:
    consent = new_id()
    publish(snapshot(consent, 1))
    publish(snapshot(consent, 2, categories=["billing", "radiographs"]))
    view = ConsentView(":memory:")
    subscriber = _subscriber(view.store, broker, topic, "g-apply")
    try:
        changes = drain(subscriber, lambda c: len(applied(c)) == 2)
        assert applied(changes) == [(consent, 1), (consent, 2)]
        assert (_ask(view).decision, _ask(view).version) == ("permit", 2)
        assert view.lag().events == 0 and view.lag().seconds is not None
    finally:
        subscriber.close()
    checker = KafkaConsumer(bootstrap_servers=broker, group_id="g-apply")
    committed = [checker.committed(TopicPartition(topic, p)) for p in range(3)]
    checker.close()
    assert sorted(committed) == [0, 0, 2]  # the rewind at start, then the next offset


def test_resends_and_stale_versions_change_nothing(broker, topic, publish) -> None:
    consent = new_id()
    first = publish(snapshot(consent, 1))
    publish(snapshot(consent, 2, change="revoked"))
    publish(snapshot(consent, 1), event_id=first)  # the relay re-sent after a lost ack
    publish(snapshot(consent, 1))  # a version the store already has, under a new id
    store = Store()
    subscriber = _subscriber(store, broker, topic, "g-dup")
    try:
        changes = drain(subscriber, lambda c: len(c) == 4)
    finally:
        subscriber.close()
    assert [c.outcome for c in changes] == [APPLIED, APPLIED, DUPLICATE, STALE]
    assert store.counts()["consent_versions"] == 2


def test_restart_resumes_from_the_committed_offset(broker, topic, publish, tmp_path) -> None:
    path = str(tmp_path / "view.db")
    consents = [new_id() for _ in range(4)]
    for consent in consents[:2]:
        publish(snapshot(consent))
    first = _subscriber(Store(path), broker, topic, "g-restart")
    assert len(applied(drain(first, lambda c: len(c) == 2))) == 2
    first.close()  # as if killed after its last commit
    for consent in consents[2:]:
        publish(snapshot(consent))
    second = _subscriber(Store(path), broker, topic, "g-restart")
    try:
        changes = drain(second, lambda c: len(c) >= 2)
    finally:
        second.close()
    # Only what was published while it was down, once each: nothing missed, nothing twice.
    assert sorted(applied(changes)) == sorted((c, 1) for c in consents[2:])
    assert Store(path).counts()["consents"] == 4


def test_crash_before_commit_redelivers_without_double_apply(broker, topic, publish) -> None:
    consent = new_id()
    publish(snapshot(consent, 1))
    store = Store()
    crashed = _subscriber(store, broker, topic, "g-crash")
    crashed._commit = lambda consumer, offsets: None  # type: ignore[method-assign]
    drain(crashed, lambda c: len(c) == 1)
    crashed.close()
    again = _subscriber(store, broker, topic, "g-crash")
    try:
        changes = drain(again, lambda c: len(c) == 1)
    finally:
        again.close()
    assert [c.outcome for c in changes] == [DUPLICATE]


def test_invalid_and_out_of_order_events_are_kept_aside(broker, topic, producer, publish) -> None:
    consent = new_id()
    publish(snapshot(consent, 1))
    producer.send(topic, key=consent.encode(), value=b"{}", headers=[]).get(timeout=10)
    publish(snapshot(consent, 3, change="revoked"))
    store = Store()
    subscriber = _subscriber(store, broker, topic, "g-gap")
    try:
        changes = drain(subscriber, lambda c: len(c) == 3)
    finally:
        subscriber.close()
    assert [c.outcome for c in changes] == [APPLIED, REJECTED, HELD]
    assert [g.held_versions for g in store.gaps()] == [(3,)]
    assert store.rejected()[0][1] == consent


def test_other_organizations_are_skipped_on_a_shared_topic(broker, topic, publish) -> None:
    publish(snapshot(new_id(), organization="org-b"))
    mine = new_id()
    publish(snapshot(mine))
    store = Store()
    subscriber = _subscriber(store, broker, topic, "g-org", organization="org-a")
    try:
        changes = drain(subscriber, lambda c: len(c) == 1)
    finally:
        subscriber.close()
    assert applied(changes) == [(mine, 1)]


# The view's lag bound in the fail-closed tests: many heartbeat intervals
# (0.2 s), so that a loaded machine delaying a few heartbeats does not make an
# idle but live subscriber look stale; the test idles for longer than it.
IDLE_BOUND_S = 3.0


def test_view_fails_closed_once_the_subscriber_stops(broker, topic, publish) -> None:
    publish(snapshot(new_id()))
    view = ConsentView(":memory:", max_lag_seconds=IDLE_BOUND_S)
    subscriber = _subscriber(view.store, broker, topic, "g-lag", heartbeat_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=subscriber.run, args=(stop,))
    thread.start()
    try:
        wait_until(
            lambda: view.store.counts()["consents"] and view.lag().seconds is not None,
            10,
            "the subscriber to catch up",
        )
        # Caught up and idle for longer than max_lag_seconds: heartbeats keep
        # the view fresh, so it answers all along.
        assert holds_for(lambda: _ask(view).decision == "permit", IDLE_BOUND_S + 0.5)
    finally:
        stop.set()
        thread.join(timeout=10)
        subscriber.close()
    wait_until(lambda: _refuses_as_stale(view), 10, "the view to refuse once heartbeats stop")
    with pytest.raises(StaleViewError, match="behind the event stream"):
        _ask(view)


def _refuses_as_stale(view: ConsentView) -> bool:
    try:
        _ask(view)
    except StaleViewError:
        return True
    return False


@pytest.mark.slow
def test_consumer_group_mode_joins_and_applies(broker, topic, publish) -> None:
    consent = new_id()
    publish(snapshot(consent))
    store = Store()
    subscriber = _subscriber(store, broker, topic, "g-join", manual_assignment=False)
    try:
        changes = drain(subscriber, lambda c: len(c) == 1, timeout=90)
    finally:
        subscriber.close()
    assert applied(changes) == [(consent, 1)]


def test_a_new_store_replays_from_the_start_whatever_the_group_committed(
    broker, topic, publish
) -> None:
    consents = [new_id() for _ in range(3)]
    for consent in consents:
        publish(snapshot(consent))
    first = _subscriber(Store(), broker, topic, "g-rebuild")
    drain(first, lambda c: len(c) == 3)
    first.close()
    # The store was lost (or lives in memory); the group's offsets say "all read".
    rebuilt = Store()
    second = _subscriber(rebuilt, broker, topic, "g-rebuild")
    try:
        changes = drain(second, lambda c: len(c) == 3)
    finally:
        second.close()
    assert sorted(applied(changes)) == sorted((c, 1) for c in consents)


def test_view_fails_closed_when_the_broker_is_unreachable() -> None:
    """An idle poll looks the same whether the topic is quiet or the broker is gone."""
    with tansu() as (address, process):
        admin = KafkaAdminClient(bootstrap_servers=address)
        admin.create_topics([NewTopic("consent.events", num_partitions=1, replication_factor=1)])
        admin.close()
        view = ConsentView(":memory:", max_lag_seconds=1.0)
        subscriber = _subscriber(
            view.store,
            address,
            "consent.events",
            "g-cut",
            heartbeat_interval=0.2,
            probe_timeout_ms=300,
        )
        try:
            deadline = time.monotonic() + 10
            while view.lag().seconds is None or view.lag().seconds > 0.5:
                assert time.monotonic() < deadline
                subscriber.poll_once(50)
            _ask(view)  # fresh: no exception (no consent, so deny)
            process.kill()
            process.wait()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                subscriber.poll_once(50)
            with pytest.raises(StaleViewError):
                _ask(view)
        finally:
            subscriber.close()


def test_a_broker_outage_delays_events_and_never_stops_the_subscriber(caplog) -> None:
    """The broker goes away between applying a batch and committing its offsets.

    It sits behind a proxy that resets every connection, and every new one,
    for the outage, as a broker gone from the network does (the soak's
    fault). The listener must ride it out and apply what is published once
    the broker is back.
    """
    behind = start_broker()
    topic = "consent.events"
    admin = KafkaAdminClient(bootstrap_servers=behind.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=behind.bootstrap, acks="all", linger_ms=0)

    def publish(consent_id: str) -> None:
        key, value, headers = record(snapshot(consent_id))
        producer.send(topic, key=key, value=value, headers=headers).get(timeout=15)

    outage = threading.Event()

    def outage_after_apply(_change: Change) -> None:
        if not outage.is_set():
            outage.set()
            behind.proxy.cut()

    before, after = new_id(), new_id()
    publish(before)
    store = Store(":memory:")
    subscriber = _subscriber(
        store,
        behind.bootstrap,
        topic,
        "g-outage",
        heartbeat_interval=0.2,
        probe_timeout_ms=300,
        on_change=outage_after_apply,
    )
    stop = threading.Event()
    thread = threading.Thread(target=subscriber.run, args=(stop,), kwargs={"poll_timeout_ms": 50})
    try:
        with caplog.at_level(logging.WARNING, logger="consent_events.subscriber"):
            thread.start()
            wait_until(
                lambda: "does not answer" in caplog.text or "poll failed" in caplog.text,
                15,
                "the subscriber to poll on through the outage",
            )
        assert store.version_of(before) == 1
        assert "offset commit failed" in caplog.text
        behind.proxy.restore()
        publish(after)
        wait_until(lambda: store.version_of(after) == 1, 20, "the event after the outage")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=10)
        subscriber.close()
        producer.close()
        behind.stop()


def test_a_poll_that_raises_is_retried_not_fatal(broker, topic, publish, monkeypatch, caplog):
    """kafka-python 3 can let a lost connection out of poll() (a failed coordinator lookup).

    Found by the soak, where it ended a listener during the broker outage. A
    real outage raises there only on some timings, so the fault is injected:
    the consumer's first three polls raise, then it works as before.
    """
    consent = new_id()
    store = Store(":memory:")
    subscriber = _subscriber(store, broker, topic, "g-raise")
    consumer = subscriber._consumer
    real_poll = consumer.poll
    raised: list[int] = []

    def failing_poll(*args, **kwargs):
        if len(raised) < 3:
            raised.append(1)
            raise KafkaConnectionError("[Errno 104] Connection reset by peer")
        return real_poll(*args, **kwargs)

    monkeypatch.setattr(consumer, "poll", failing_poll)
    publish(snapshot(consent))
    stop = threading.Event()
    ended: list[Exception] = []

    def run() -> None:
        try:
            subscriber.run(stop, poll_timeout_ms=50)
        except Exception as error:  # noqa: BLE001 -- what ended the listener, asserted below
            ended.append(error)

    thread = threading.Thread(target=run)
    try:
        with caplog.at_level(logging.INFO, logger="consent_events.subscriber"):
            thread.start()
            wait_until(
                lambda: store.version_of(consent) == 1 or not thread.is_alive(),
                15,
                "the event after the failed polls",
            )
        assert not ended, ended
        assert store.version_of(consent) == 1 and len(raised) == 3
        assert caplog.text.count("poll failed") == 1  # once per outage, not once per poll
        assert "the broker answers again" in caplog.text
    finally:
        stop.set()
        thread.join(timeout=10)
        subscriber.close()
