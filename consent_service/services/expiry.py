"""Expiring consents whose ``valid_until`` has passed, overdue consent requests, and
emergency accesses past their ``expires_at``.

Runs inside the active relay's loop and as ``consent-service expire`` (a
CronJob). Several of them, or a revoke arriving at the same moment, are
safe: each expiry is a compare-and-set on the version the pass saw
(``services.consents.expire_consent``), so exactly one change wins and the
losers record nothing. Each consent gets its own short transaction, so a
pass never holds the SQLite write lock, or many PostgreSQL row locks, for
long.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from consent_service.db.session import Database
from consent_service.services.consents import due_for_expiry, expire_consent
from consent_service.services.emergency import expire_emergency_accesses
from consent_service.services.requests import expire_requests
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

PAGE = 200


def expire_due(
    database: Database, *, clock: Callable[[], datetime] = utcnow, page: int = PAGE
) -> int:
    """Expire every consent now due; return how many this call expired.

    Pending consent requests past their deadline are closed first, so their
    stored status says ``expired`` without waiting for an answer attempt;
    then emergency accesses past their end (decisions stopped honouring them
    at ``expires_at`` already: this writes their ``expired`` event and audit
    entry).
    """
    with database.transaction() as session:
        closed = expire_requests(session, now=clock())
    if closed:
        log.info("closed %d overdue consent requests", closed)
    while True:
        with database.transaction() as session:
            stopped = expire_emergency_accesses(session, now=clock(), limit=page)
        if stopped:
            log.info("closed %d emergency accesses at their end", stopped)
        if stopped < page:
            break
    total = 0
    while True:
        now = clock()
        with database.reading() as session:
            due = due_for_expiry(session, now=now, limit=page)
        won = 0
        for consent_id, version in due:
            with database.transaction() as session:
                if expire_consent(
                    session, consent_id=consent_id, expected_version=version, now=now
                ):
                    won += 1
        total += won
        # A short page means nothing else is due; a page lost entirely means
        # another writer is busy with these consents: the next pass will see.
        if len(due) < page or won == 0:
            if total:
                log.info("expired %d consents", total)
            return total
