"""The relay's own metrics and its small HTTP endpoint (``/metrics``, ``/healthz``).

The backlog count and the age of the oldest unpublished event come from
``consent_service.metrics.OutboxCollector`` (read from the database at each
scrape, the same figures the API's ``/readyz`` reports); the counters below
are the relay's own. Alert on ``consent_relay_poison_events > 0``: a held
event blocks its consent's later events until someone looks at it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from consent_service import metrics
from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database

log = logging.getLogger(__name__)

PUBLISHED = Counter(
    "consent_relay_published_total", "Outbox events acknowledged by Kafka (acks=all)."
)
FAILURES = Counter(
    "consent_relay_publish_failures_total",
    "Failed publish attempts: broker (unreachable, timed out; retried) or rejected (poison).",
    ["kind"],
)
# From the outbox row's creation (inside the writing transaction) to the
# broker's acknowledgement; the target is a p99 under 100 ms.
LATENCY = Histogram(
    "consent_relay_commit_to_ack_seconds",
    "Time from an event's write to Kafka's acknowledgement.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0),
)
ACTIVE = Gauge("consent_relay_active", "1 while this relay holds the lease and publishes.")
EXPIRED = Counter("consent_relay_expired_total", "Consents this relay marked expired.")


class PoisonCollector(Collector):
    """Events set aside as poison, counted in the database at each scrape."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        try:
            with self._database.read_only() as connection:
                held = connection.execute(
                    select(func.count()).where(
                        OutboxEvent.held_at.is_not(None), OutboxEvent.published_at.is_(None)
                    )
                ).scalar_one()
        except SQLAlchemyError as error:
            log.warning("poison metrics query failed: %s", type(error).__name__)
            return
        yield GaugeMetricFamily(
            "consent_relay_poison_events",
            "Outbox events held as poison (unserialisable, schema-invalid or refused by "
            "Kafka); their consent's later events wait behind them.",
            value=held,
        )


class Heartbeat:
    """What ``/healthz`` reports: the loop's role and when it last went round."""

    def __init__(self) -> None:
        self.role = "starting"
        self._beat = time.monotonic()
        self._lock = threading.Lock()

    def beat(self, role: str) -> None:
        with self._lock:
            self.role = role
            self._beat = time.monotonic()

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self._beat


def serve_metrics(
    database: Database,
    heartbeat: Heartbeat,
    *,
    host: str,
    port: int,
    stale_after: float = 120.0,
) -> ThreadingHTTPServer:
    """Start the endpoint on a daemon thread; ``shutdown()`` the result to stop it.

    ``/healthz`` turns 503 when the loop has not gone round for
    ``stale_after`` seconds (longer than any backoff or delivery timeout),
    so that a wedged relay is restarted rather than left holding the lease.
    """
    poison = PoisonCollector(database)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body = metrics.exposition(database) + _exposition(poison)
                self._answer(200, "text/plain; version=0.0.4; charset=utf-8", body)
            elif self.path == "/healthz":
                age = heartbeat.age()
                status = {
                    "status": "ok" if age < stale_after else "stalled",
                    "role": heartbeat.role,
                    "seconds_since_loop": round(age, 3),
                }
                code = 200 if age < stale_after else 503
                self._answer(code, "application/json", json.dumps(status).encode())
            else:
                self._answer(404, "text/plain", b"not found\n")

        def _answer(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # Scrapes every few seconds would drown the relay's own log.

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="relay-metrics", daemon=True).start()
    return server


def _exposition(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
