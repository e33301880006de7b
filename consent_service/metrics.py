"""Prometheus metrics shared by the API, the services and the relay.

This module stays free of Flask, so that the relay and the services can
import it. Under gunicorn every worker is its own process: ``gunicorn_conf``
points ``PROMETHEUS_MULTIPROC_DIR`` at a directory where each worker keeps
its counters, and ``/metrics`` adds them up, whichever worker answers.
Without that variable (tests, one-process tools) the process's own default
registry is served. Every metric here has labels, so that its values are
created after a worker forked, in the mode that worker runs in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import (
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.receipt_metrics import SubscriberLagCollector
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

DECISIONS = Counter("consent_decisions_total", "Decisions answered, by outcome.", ["outcome"])
CONSENT_CHANGES = Counter(
    "consent_changes_total", "Consent versions recorded, by change type.", ["change"]
)
# Incremented by consent_service.api.metrics, which times every request.
HTTP_REQUESTS = Counter(
    "consent_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
# Buckets span a cached decision (~2 ms) to a request that hit a lock or a
# slow disk (seconds); benchmarks/api_throughput.py measures creates around
# 50-60 ms at p50 under load.
HTTP_LATENCY = Histogram(
    "consent_http_request_duration_seconds",
    "Time from the first request hook to the response, by route template and method.",
    ["route", "method"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def exposition(
    database: Database | None = None, *, enforcement_sla_seconds: float | None = None
) -> bytes:
    """The text a scrape of this process returns.

    With ``enforcement_sla_seconds`` (the API passes it; the relay does
    not, so the lag query runs once per scrape), subscribers' lag too.
    Includes the outbox figures when given the database (the API and the
    relay both do), read fresh at each scrape.
    """
    sources: list[Collector] = [_process_metrics()]
    if database is not None:
        sources.append(OutboxCollector(database))
        if enforcement_sla_seconds is not None:
            sources.append(SubscriberLagCollector(database, enforcement_sla_seconds))
    return generate_latest(_Together(sources))


def _process_metrics() -> Collector:
    """Every worker's counters in multiprocess mode, else this process's registry."""
    path = os.environ.get(MULTIPROC_DIR_ENV)
    if path:
        return multiprocess.MultiProcessCollector(None, path=path)
    return REGISTRY


class _Together(Collector):
    """Several collectors exposed as one, for a single scrape."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


class OutboxCollector(Collector):
    """Outbox backlog and age, read from the database at each scrape.

    A gauge kept in process memory would be stale and per-worker; one
    indexed query per scrape is cheap (partial indexes on the pending and
    unpositioned rows) and always true. If the database does not answer,
    ``consent_outbox_query_up`` says so instead of the scrape failing.
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "consent_outbox_query_up", "1 if the outbox backlog query answered at this scrape."
        )
        try:
            pending, oldest, unpositioned = self._query()
        except SQLAlchemyError as exc:
            log.warning("outbox metrics query failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily(
            "consent_outbox_backlog_events",
            "Outbox events not yet acknowledged by Kafka.",
            value=pending,
        )
        yield GaugeMetricFamily(
            "consent_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest outbox event not yet acknowledged by Kafka; 0 when none.",
            value=_age_seconds(oldest),
        )
        yield GaugeMetricFamily(
            "consent_outbox_unpositioned_events",
            "Committed outbox events the relay has not yet given a position "
            "(invisible to GET /v1/events until it does).",
            value=unpositioned,
        )

    def _query(self) -> tuple[int, datetime | None, int]:
        with self._database.read_only() as connection:
            pending, oldest = connection.execute(
                select(func.count(), func.min(OutboxEvent.created_at)).where(
                    OutboxEvent.published_at.is_(None)
                )
            ).one()
            unpositioned = connection.execute(
                select(func.count()).where(OutboxEvent.position.is_(None))
            ).scalar_one()
        return int(pending), oldest, int(unpositioned)


def _age_seconds(oldest: datetime | None) -> float:
    if oldest is None:
        return 0.0
    return max((utcnow() - oldest).total_seconds(), 0.0)
