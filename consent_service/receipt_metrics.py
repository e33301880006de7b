"""Prometheus figures of enforcement receipts: subscriber lag and revocation latency.

Lag is read from the database at each scrape, like the outbox backlog, so
that every worker answers the same, current figure. The latency histogram
is observed by the worker that records the last acknowledgement of a
revocation (in multiprocess mode, summed over workers at scrape).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from consent_service.db.session import Database
from consent_service.services.receipts import subscriber_lags
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

REVOCATION_ENFORCED = Histogram(
    "consent_revocation_enforced_seconds",
    "From a revocation being recorded to the last active subscriber acknowledging it.",
    ["organization"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0),
)


class SubscriberLagCollector(Collector):
    """Per active subscriber: changes not yet acknowledged and the oldest one's age."""

    def __init__(self, database: Database, sla_seconds: float) -> None:
        self._database = database
        self._sla = timedelta(seconds=sla_seconds)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "consent_subscriber_lag_query_up", "1 if the subscriber lag query answered."
        )
        try:
            with self._database.read_only() as connection, Session(bind=connection) as session:
                lags = subscriber_lags(session, late_before=utcnow() - self._sla)
        except SQLAlchemyError as exc:
            log.warning("subscriber lag query failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        labels = ["organization", "subscriber_id", "subscriber"]
        changes = GaugeMetricFamily(
            "consent_subscriber_unacknowledged_changes",
            "Consent changes a subscriber has not acknowledged yet.",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "consent_subscriber_lag_seconds",
            "Age of the oldest change a subscriber has not acknowledged; 0 when none.",
            labels=labels,
        )
        revocation_seconds = GaugeMetricFamily(
            "consent_subscriber_revocation_lag_seconds",
            "Age of the oldest revocation a subscriber has not acknowledged; 0 when none.",
            labels=labels,
        )
        late = GaugeMetricFamily(
            "consent_subscriber_late_revocations",
            "Revocations a subscriber has not acknowledged within "
            "CONSENT_ENFORCEMENT_SLA_SECONDS of their recording.",
            labels=labels,
        )
        now = utcnow()
        for lag in lags:
            key = [lag.organization, lag.subscriber_id, lag.name]
            changes.add_metric(key, lag.unacknowledged)
            seconds.add_metric(key, _age(now, lag.oldest_unacknowledged_at))
            revocation_seconds.add_metric(key, _age(now, lag.oldest_unacknowledged_revocation_at))
            late.add_metric(key, lag.late_revocations)
        yield changes
        yield seconds
        yield revocation_seconds
        yield late
        yield GaugeMetricFamily(
            "consent_enforcement_sla_seconds",
            "CONSENT_ENFORCEMENT_SLA_SECONDS: a revocation acknowledged later is late.",
            value=self._sla.total_seconds(),
        )


def _age(now: datetime, since: datetime | None) -> float:
    return max((now - since).total_seconds(), 0.0) if since is not None else 0.0
