"""The relay: outbox rows to Kafka, in order per consent, at least once.

One round (``Relay.run_once``):

1. give committed rows their positions (``sequencer.assign_positions``);
2. read unpublished rows in position order, skipping consents that wait
   behind a poison row, and keep only each consent's *earliest* pending
   row: a later version is sent only once the earlier one was acknowledged,
   so no failure or retry can put version n+1 on the topic before version n;
3. build each record (``envelope``): the stored bytes of a row the writer
   validated, passed through; any other row is checked first, and a row
   that cannot be a record is held as poison with its error;
4. publish, and mark published only the rows the broker acknowledged, in
   one statement.

There is no "after id N" high-water mark anywhere: every round reads what is
still unpublished, so a transaction that commits late is picked up by the
next round whatever its id.

``Relay.run`` loops over rounds while this process holds the lease (one
active relay; see ``lease``), runs expiry every ``expiry_interval``, backs
off when Kafka or the database is away (the rows wait in the outbox), and
on stop finishes the round in flight, flushes and closes the producer.
After an empty round it waits for the next commit (``wakeup``: a
PostgreSQL notification, or a short poll on SQLite).
Blocking: a round waits at most the producer's delivery timeout; waits
between rounds end early when ``stop`` is set (a notification wait within
``notify_fallback``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.exc import SQLAlchemyError

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.outbox import relay_metrics
from consent_service.outbox.envelope import Envelope, Message, PoisonEvent, topic_for
from consent_service.outbox.lease import Lease
from consent_service.outbox.publisher import Publisher, PublishError
from consent_service.outbox.sequencer import assign_positions
from consent_service.outbox.wakeup import Wakeup, wakeup_for
from consent_service.services.expiry import expire_due
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

ERROR_LENGTH = 500  # outbox_events.last_error
OUTBOX = cast(Table, OutboxEvent.__table__)

# Each consent's earliest unpublished row comes from this read; Core, built
# once: the ORM's per-row objects cost more than the query on SQLite.
_HELD_CONSENTS = (
    select(OUTBOX.c.consent_id)
    .where(OUTBOX.c.held_at.is_not(None), OUTBOX.c.published_at.is_(None))
    .scalar_subquery()
)
_PENDING = (
    select(
        OUTBOX.c.id,
        OUTBOX.c.event_id,
        OUTBOX.c.organization,
        OUTBOX.c.consent_id,
        OUTBOX.c.consent_version,
        OUTBOX.c.type,
        OUTBOX.c.time,
        OUTBOX.c.payload,
        OUTBOX.c.validated,
    )
    .where(
        OUTBOX.c.published_at.is_(None),
        OUTBOX.c.position.is_not(None),
        OUTBOX.c.consent_id.not_in(_HELD_CONSENTS),
    )
    .order_by(OUTBOX.c.position)
    .limit(bindparam("limit"))
)
_MARK_PUBLISHED = (
    update(OUTBOX)
    .where(OUTBOX.c.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("now"))
)


@dataclass(frozen=True)
class RelayOptions:
    """Tuning of the loop; the defaults suit production."""

    batch_size: int = 5000
    # After an empty round, on SQLite (and on PostgreSQL while the listening
    # connection is away): bounds commit-to-broker latency when idle. An
    # idle round is one indexed read without a lock.
    idle_sleep: float = 0.005
    # On PostgreSQL a commit's notification wakes the relay; without one it
    # still goes round this often (a safety net, and how soon ``stop`` is seen).
    notify_fallback: float = 0.5
    expiry_interval: float = 30.0
    standby_poll: float = 1.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    close_timeout: float = 5.0
    topic: str = "consent.events"
    topic_mode: str = "single"


class Relay:
    """Publishes the outbox of ``database`` through ``publisher``.

    ``publisher`` None means no Kafka is configured: the relay still orders
    the outbox (for ``GET /v1/events``) and runs expiry.
    ``on_acknowledged`` is called with the acknowledged rows before they are
    marked: the fault tests kill the process there.
    """

    def __init__(
        self,
        database: Database,
        publisher: Publisher | None,
        lease: Lease,
        *,
        options: RelayOptions | None = None,
        envelope: Envelope | None = None,
        clock: Callable[[], datetime] = utcnow,
        heartbeat: relay_metrics.Heartbeat | None = None,
        on_acknowledged: Callable[[Sequence[Row[Any]]], None] | None = None,
        wakeup: Wakeup | None = None,
    ) -> None:
        self.database = database
        self.publisher = publisher
        self.lease = lease
        self.options = options or RelayOptions()
        self.envelope = envelope or Envelope()
        self.clock = clock
        self.heartbeat = heartbeat or relay_metrics.Heartbeat()
        self.on_acknowledged = on_acknowledged
        self.wakeup = wakeup or wakeup_for(
            database, poll=self.options.idle_sleep, fallback=self.options.notify_fallback
        )

    # One round -----------------------------------------------------------

    def run_once(self) -> int:
        """Sequence, publish and mark one batch; return how many rows it handled.

        Raises ``PublishError`` when Kafka did not take the batch (acknowledged
        rows are marked first) and ``SQLAlchemyError`` when the database is away.
        """
        self._sequence()
        rows = self._pending()
        if not rows:
            return 0
        ready: list[tuple[Row[Any], Message]] = []
        poison: list[tuple[Row[Any], str]] = []
        for row in rows:
            topic = topic_for(self.options.topic, self.options.topic_mode, row.organization)
            try:
                ready.append((row, self.envelope.message(row, topic)))
            except PoisonEvent as error:
                poison.append((row, str(error)))
        self._hold(poison)
        if self.publisher is None or not ready:
            return len(poison)
        for topic in dict.fromkeys(message.topic for _, message in ready):
            self.publisher.ensure_topic(topic)
        outcomes = self.publisher.publish([message for _, message in ready])
        results = [(row, outcome) for (row, _), outcome in zip(ready, outcomes, strict=True)]
        acknowledged = [row for row, outcome in results if outcome.acknowledged]
        rejected = [
            (row, f"refused by Kafka: {outcome.error}")
            for row, outcome in results
            if outcome.rejected
        ]
        failed = [
            (row, outcome.error or "not acknowledged")
            for row, outcome in results
            if not outcome.acknowledged and not outcome.rejected
        ]
        if acknowledged and self.on_acknowledged is not None:
            self.on_acknowledged(acknowledged)
        self._mark_published(acknowledged)
        self._hold(rejected)
        self._note_failures(failed)
        if failed:
            raise PublishError(f"{len(failed)} of {len(ready)} events not acknowledged")
        return len(rows)

    def _sequence(self) -> None:
        # A read first: on SQLite the sequencer's transaction takes the write
        # lock, which an idle relay must not do every few milliseconds.
        with self.database.reading() as session:
            waiting = session.scalar(
                select(OutboxEvent.id).where(OutboxEvent.position.is_(None)).limit(1)
            )
        if waiting is not None:
            with self.database.transaction() as session:
                assign_positions(session, limit=self.options.batch_size)

    def _pending(self) -> list[Row[Any]]:
        """Each consent's earliest unpublished row, in position order."""
        with self.database.read_only() as connection:
            rows = connection.execute(_PENDING, {"limit": self.options.batch_size}).all()
        # Typed loosely: mypy's Row[...] of nine columns is not a Row[Any].
        first: dict[str, Any] = {}
        for row in rows:
            first.setdefault(row.consent_id, row)
        return list(first.values())

    def _mark_published(self, rows: Sequence[Row[Any]]) -> None:
        if not rows:
            return
        now = self.clock()
        with self.database.transaction() as session:
            session.connection().execute(
                _MARK_PUBLISHED, {"ids": [row.id for row in rows], "now": now}
            )
        relay_metrics.PUBLISHED.inc(len(rows))
        # ``time`` is the write's clock (the writer sets it with ``created_at``);
        # not reading ``created_at`` saves a datetime parse per row.
        for row in rows:
            relay_metrics.LATENCY.observe(max((now - row.time).total_seconds(), 0.0))

    def _hold(self, rows: Sequence[tuple[Row[Any], str]]) -> None:
        """Set poison rows aside; their consent's later rows wait behind them."""
        if not rows:
            return
        now = self.clock()
        with self.database.transaction() as session:
            for row, error in rows:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id == row.id)
                    .values(
                        held_at=now,
                        last_error=error[:ERROR_LENGTH],
                        attempts=OutboxEvent.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
        for row, error in rows:
            log.error(
                "outbox event %s (consent %s version %d) held as poison: %s",
                row.event_id,
                row.consent_id,
                row.consent_version,
                error,
            )
        relay_metrics.FAILURES.labels("rejected").inc(len(rows))

    def _note_failures(self, rows: Sequence[tuple[Row[Any], str]]) -> None:
        if not rows:
            return
        with self.database.transaction() as session:
            for row, error in rows:
                session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.id == row.id)
                    .values(last_error=error[:ERROR_LENGTH], attempts=OutboxEvent.attempts + 1)
                    .execution_options(synchronize_session=False)
                )

    # The loop ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Wait for the lease, publish while holding it, until ``stop`` is set."""
        try:
            while not stop.is_set():
                self.heartbeat.beat("standby")
                if not self.lease.try_acquire():
                    stop.wait(self.options.standby_poll)
                    continue
                log.info("relay lease acquired: this relay publishes")
                relay_metrics.ACTIVE.set(1)
                try:
                    self._lead(stop)
                finally:
                    relay_metrics.ACTIVE.set(0)
        finally:
            try:
                self.wakeup.close()
                if self.publisher is not None:
                    self.publisher.close(self.options.close_timeout)
            finally:
                # Whatever closing did: a lease kept by a stopped relay would
                # leave every standby waiting for good.
                self.lease.release()
                log.info("relay stopped")

    def _lead(self, stop: threading.Event) -> None:
        backoff = Backoff(self.options.backoff_initial, self.options.backoff_max)
        next_expiry = 0.0
        # Listen before the first round: a commit during it must wake the wait after it.
        self.wakeup.prepare()
        while not stop.is_set():
            if not self.lease.is_held():
                log.error("relay lease lost: back to standby")
                return
            self.heartbeat.beat("active")
            try:
                if time.monotonic() >= next_expiry:
                    relay_metrics.EXPIRED.inc(expire_due(self.database, clock=self.clock))
                    next_expiry = time.monotonic() + self.options.expiry_interval
                handled = self.run_once()
            except PublishError as error:
                delay = backoff.next()
                relay_metrics.FAILURES.labels("broker").inc()
                log.error(
                    "Kafka did not take the events (%s); retrying in %.1f s, "
                    "they wait in the outbox",
                    error,
                    delay,
                )
                stop.wait(delay)
                continue
            except SQLAlchemyError as error:
                delay = backoff.next()
                log.error(
                    "database error in the relay (%s); retrying in %.1f s",
                    type(error).__name__,
                    delay,
                )
                stop.wait(delay)
                continue
            backoff.reset()
            if handled == 0:
                self.wakeup.wait(stop)


class Backoff:
    """Exponential delays with jitter, so that relays do not retry in step."""

    def __init__(self, initial: float, ceiling: float) -> None:
        self._initial = initial
        self._ceiling = ceiling
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._ceiling)
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self._next = self._initial
