"""Request metrics and ``GET /metrics`` for the Flask app."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST

from consent_service.http.context import state
from consent_service.metrics import HTTP_LATENCY, HTTP_REQUESTS, exposition

UNMATCHED_ROUTE = "<unmatched>"

blp = Blueprint("metrics", __name__)


def register_metrics(app: Flask) -> None:
    """Count and time every request of ``app`` and serve ``GET /metrics``.

    The timer goes first among the request hooks, so that a request another
    hook answers early (authentication, rate limit, 415) is still timed.
    """
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_observe)
    app.register_blueprint(blp)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    # The route template, never the raw path: ids in paths would make one
    # time series per consent and put patient references into metrics.
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED_ROUTE
    HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
    return response


@blp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition: every worker's counters and the outbox backlog."""
    service = state()
    body = exposition(
        service.database, enforcement_sla_seconds=service.settings.enforcement_sla_seconds
    )
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
