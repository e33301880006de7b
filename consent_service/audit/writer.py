"""Read, decision and refusal audit entries, appended off the request path in batches.

Appending in the request cost each decision an INSERT and a commit of its
own, the largest single cost of a decision (``benchmarks/README.md``). A
request now hands its entries to its process's writer and answers; the
writer's thread appends what has queued once the oldest entry has waited
the batch window (``CONSENT_AUDIT_BATCH_MS``) or ``max_batch`` entries are
waiting: one INSERT and one commit, on one chain (``audit.chain.append``).

Nothing is dropped short of a hard crash of the process:

- a batch that fails is kept and retried after a growing pause (up to
  ``RETRY_MAX_S``) until it commits. A commit cut after the database
  committed but before it answered can so record a batch twice, on two
  chains that both verify: an entry may be doubled, never lost;
- past ``max_pending`` entries waiting, ``submit`` refuses and the request
  appends its own entries, and answers 503 when that fails too, as without
  batching: a long outage cannot grow memory without bound, and refusals of
  service stay visible to callers;
- at interpreter exit (a gunicorn worker leaves through ``sys.exit``)
  ``atexit`` flushes the queue, for at most ``EXIT_FLUSH_TIMEOUT_S``; what
  could not be written then is logged with its count.

A killed process (SIGKILL, out of memory) loses the entries of its last
window. ``audit verify`` sees no break: a chain's head only moves once its
entries committed, so the lost entries leave no gap in any chain.

A writer belongs to the process that made it. A forked child (a gunicorn
worker forked from a parent that had appended) neither writes nor waits for
its parent's queue: ``audit.trail`` makes it a writer of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine

from consent_service import audit
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 500
MAX_PENDING = 10_000
IDLE_EXIT_S = 5.0
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
EXIT_FLUSH_TIMEOUT_S = 10.0


class BatchWriter:
    """Queued audit records of one engine in one process, and the thread that appends them.

    The thread starts with the first entry and ends after ``IDLE_EXIT_S``
    without any, so an idle writer holds no thread.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        window_ms: int,
        max_batch: int | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.engine = engine
        self.pid = os.getpid()
        self._window = window_ms / 1000
        self._max_batch = max_batch or MAX_BATCH
        self._max_pending = MAX_PENDING if max_pending is None else max_pending
        self._lock = threading.Condition()
        # (time queued, record), oldest first.
        self._queue: deque[tuple[float, audit.Record]] = deque()
        self._in_flight = 0
        self._submitted = 0
        self._committed = 0
        self._flushing = 0
        self._thread: threading.Thread | None = None
        with _registry_lock:
            _writers.add(self)

    @property
    def pending(self) -> int:
        """Entries handed over and not yet committed."""
        with self._lock:
            return len(self._queue) + self._in_flight

    def submit(self, records: Sequence[audit.Record]) -> bool:
        """Queue ``records`` for the thread; False, queueing none, when too many already wait."""
        with self._lock:
            waiting = len(self._queue) + self._in_flight
            if waiting + len(records) > self._max_pending:
                return False
            now = time.monotonic()
            self._queue.extend((now, record) for record in records)
            self._submitted += len(records)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()
            # The thread polls the queue every window on its own: a request
            # wakes it only when a batch is full. (Waking it per request cost
            # a decision 6%: a thread switch on every hand-off.)
            if len(self._queue) >= self._max_batch:
                self._lock.notify_all()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until every entry handed over before this call is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._submitted
            self._flushing += 1
            self._lock.notify_all()
            try:
                while self._committed < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._lock.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def _run(self) -> None:
        # The thread keeps one connection while it has work: a checkout per
        # batch would cost a pre-ping round trip on PostgreSQL each time.
        connection: Connection | None = None
        try:
            while (batch := self._next_batch()) is not None:
                connection = self._write(connection, batch)
                with self._lock:
                    self._in_flight = 0
                    self._committed += len(batch)
                    self._lock.notify_all()
        finally:
            _close(connection)

    def _next_batch(self) -> list[audit.Record] | None:
        """The next batch once due; None after ``IDLE_EXIT_S`` without entries: the thread ends."""
        with self._lock:
            idle_until = time.monotonic() + IDLE_EXIT_S
            while not self._queue:
                remaining = idle_until - time.monotonic()
                if remaining <= 0:
                    self._thread = None  # under the lock: the next submit starts another
                    return None
                # Submitters do not wake an idle thread: it looks again after
                # a window (an entry so still waits about one window).
                self._lock.wait(min(remaining, self._window))
            due = self._queue[0][0] + self._window
            while len(self._queue) < self._max_batch and not self._flushing:
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            count = min(len(self._queue), self._max_batch)
            self._in_flight = count
            return [self._queue.popleft()[1] for _ in range(count)]

    def _write(self, connection: Connection | None, batch: list[audit.Record]) -> Connection:
        """Append ``batch``, retrying until it commits (it is never given up); the connection."""
        failures = 0
        pause = RETRY_FIRST_S
        while True:
            try:
                connection = connection or self.engine.connect()
                audit.append(connection, batch, now=utcnow())
            except Exception as error:  # noqa: BLE001 - whatever failed, the batch is kept
                # A fresh connection next time (pre-pinged by the pool).
                _close(connection)
                connection = None
                failures += 1
                # Ids only: the error's text could quote the statement's parameters.
                log.warning(
                    "audit batch append failed (%s), attempt %d: %d entries from "
                    "request_id=%s on, retrying in %.2f s",
                    type(error).__name__,
                    failures,
                    len(batch),
                    batch[0].request_id,
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            if failures:
                log.warning(
                    "audit batch appended after %d failed attempts: %d entries",
                    failures,
                    len(batch),
                )
            return connection


def _close(connection: Connection | None) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()


_registry_lock = threading.Lock()
# Every writer made in this process (and, in a forked child, its parent's
# copies, which ``flush`` skips). A writer with work is held by its thread.
_writers: weakref.WeakSet[BatchWriter] = weakref.WeakSet()


def before_flush(callback: Callable[[], None]) -> None:
    """Call ``callback`` at the start of every ``flush``: it may hand over entries it held back."""
    _before_flush.append(callback)


def flush(timeout: float) -> bool:
    """Wait until this process's writers committed what they were handed; False on timeout."""
    deadline = time.monotonic() + timeout
    for callback in _before_flush:
        callback()
    results = [writer.flush(max(deadline - time.monotonic(), 0.0)) for writer in _own_writers()]
    return all(results)


_before_flush: list[Callable[[], None]] = []


def _own_writers() -> list[BatchWriter]:
    with _registry_lock:
        writers = list(_writers)
    return [writer for writer in writers if writer.pid == os.getpid()]


def _flush_at_exit() -> None:
    if not flush(EXIT_FLUSH_TIMEOUT_S):
        lost = sum(writer.pending for writer in _own_writers())
        log.error("audit entries not appended before exit: %d lost", lost)


atexit.register(_flush_at_exit)
