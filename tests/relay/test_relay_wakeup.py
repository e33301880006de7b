"""The idle relay wakes on a commit's notification (PostgreSQL), and works without one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from consent_service.db.session import Database
from consent_service.outbox.lease import lease_for
from consent_service.outbox.publisher import InMemoryPublisher
from consent_service.outbox.relay import Relay, RelayOptions
from consent_service.outbox.wakeup import Poll, PostgresNotifications, wakeup_for
from tests.relay.conftest import Writes
from tests.support.waiting import wait_until

# Far longer than any test waits: a wait that ends sooner was woken by a notification.
NEVER = 60.0


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_until(condition, timeout, "the relay to get there", interval=0.005)


@pytest.fixture
def postgres(database: Database) -> Database:
    if database.is_sqlite:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return database


@pytest.fixture
def listener(postgres: Database) -> Iterator[PostgresNotifications]:
    notifications = PostgresNotifications(postgres, fallback=NEVER, poll=0.01)
    notifications.prepare()
    yield notifications
    notifications.close()


def waiting(wakeup: PostgresNotifications) -> threading.Thread:
    thread = threading.Thread(target=wakeup.wait, args=(threading.Event(),), daemon=True)
    thread.start()
    return thread


def test_a_commit_wakes_a_waiting_listener(listener: PostgresNotifications, writes: Writes) -> None:
    thread = waiting(listener)
    writes.grant()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_commit_while_busy_wakes_the_next_wait(
    listener: PostgresNotifications, writes: Writes
) -> None:
    # Committed after LISTEN but before the wait: the notification waits in the connection.
    writes.grant()
    writes.grant()
    thread = waiting(listener)
    thread.join(timeout=10)
    assert not thread.is_alive()
    # Once the notifications of those commits are consumed, a wait sleeps until the next one.
    second = asleep(listener)
    writes.grant()
    second.join(timeout=10)
    assert not second.is_alive()


def asleep(listener: PostgresNotifications, tries: int = 3) -> threading.Thread:
    """A wait still asleep after 0.3 s: the notifications sent so far were all consumed.

    One wait usually takes every pending notification, but on a loaded machine
    the second commit's may reach the socket just after: the next wait takes it.
    """
    for _ in range(tries):
        thread = waiting(listener)
        thread.join(timeout=0.3)
        if thread.is_alive():
            return thread
    raise AssertionError(f"the listener woke {tries} times in a row without a new commit")


def test_a_rolled_back_write_does_not_notify(
    listener: PostgresNotifications, writes: Writes, postgres: Database
) -> None:
    with pytest.raises(RuntimeError), postgres.transaction() as session:
        session.execute(
            text(
                "INSERT INTO outbox_events (event_id, organization, consent_id, consent_version,"
                " type, time, payload, created_at) VALUES ('e-rolled-back', 'practice-a', 'c',"
                " 1, 'consent.granted', now(), '{}', now())"
            )
        )
        raise RuntimeError("roll back")
    thread = waiting(listener)
    thread.join(timeout=0.3)
    assert thread.is_alive()
    writes.grant()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_relay_publishes_on_notification_alone(postgres: Database, writes: Writes) -> None:
    """With a fallback poll of a minute, only the notification can bring the event out."""
    publisher = InMemoryPublisher()
    relay = Relay(
        postgres,
        publisher,
        lease_for(postgres),
        options=RelayOptions(notify_fallback=NEVER, idle_sleep=NEVER, expiry_interval=3600),
    )
    stop = threading.Event()
    loop = threading.Thread(target=relay.run, args=(stop,))
    loop.start()
    try:
        until(lambda: relay.heartbeat.role == "active")
        for count in range(1, 4):
            writes.grant()
            until(lambda count=count: len(publisher.sent) == count)
    finally:
        stop.set()
        # Stopping waits for the current wait to end; a notification ends it.
        writes.grant()
        loop.join(timeout=10)
    assert not loop.is_alive()


def test_a_lost_listening_connection_falls_back_to_polling_and_listens_again(
    postgres: Database, writes: Writes
) -> None:
    publisher = InMemoryPublisher()
    wakeup = PostgresNotifications(postgres, fallback=NEVER, poll=0.01)
    relay = Relay(
        postgres,
        publisher,
        lease_for(postgres),
        options=RelayOptions(expiry_interval=3600),
        wakeup=wakeup,
    )
    stop = threading.Event()
    loop = threading.Thread(target=relay.run, args=(stop,))
    loop.start()
    try:
        until(lambda: wakeup._connection is not None)
        connection = wakeup._connection
        assert connection is not None
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar()
        with postgres.engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The wait in progress sees the connection die; the relay polls, then listens again.
        until(lambda: wakeup._connection is not None and wakeup._connection is not connection)
        consent_id = writes.grant()
        until(lambda: any(m.key == consent_id.encode() for m in publisher.sent))
    finally:
        stop.set()
        writes.grant()
        loop.join(timeout=10)
    assert not loop.is_alive()


def test_without_notifications_the_relay_polls(database: Database, writes: Writes) -> None:
    """SQLite's way, and PostgreSQL's with the wakeup replaced by a poll."""
    publisher = InMemoryPublisher()
    relay = Relay(
        database,
        publisher,
        lease_for(database),
        options=RelayOptions(expiry_interval=3600),
        wakeup=Poll(0.01),
    )
    stop = threading.Event()
    loop = threading.Thread(target=relay.run, args=(stop,))
    loop.start()
    try:
        consent_id = writes.grant()
        until(lambda: any(m.key == consent_id.encode() for m in publisher.sent))
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    if database.is_sqlite:
        assert isinstance(wakeup_for(database, poll=0.01, fallback=1), Poll)
