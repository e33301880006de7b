"""Security headers, request ids in logs, the access log, the audit trail, rate limits.

``register_security`` is called last by the app factory, so that its
after-request hooks run first (Flask runs them in reverse): the audit trail
may still turn an answer into a 503, and the headers then go on whatever
answer leaves, errors included.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from consent_service import audit
from consent_service.audit import trail as audit_trail
from consent_service.config import Settings
from consent_service.db.session import Database
from consent_service.http.logs import configure_logging
from consent_service.ratelimits import RATE_LIMITS_EXTENSION, build_rate_limits

access_log = logging.getLogger("consent_service.access")

HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
NO_STORE_TYPES = ("application/json", "application/problem+json")


def register_security(app: Flask, settings: Settings, database: Database) -> None:
    """Wire headers, logging, audit and rate limits into ``app``."""
    configure_logging()
    audit.configure(settings.audit_keys)
    app.extensions[RATE_LIMITS_EXTENSION] = build_rate_limits(
        settings.rate_limits, settings.rate_limit_storage, database.url, database.engine
    )
    app.before_request(_begin)
    app.after_request(_security_headers)
    app.after_request(_access_log)
    app.after_request(audit_trail.record_request)


def _begin() -> None:
    g.security_started = time.perf_counter()
    audit_trail.begin_request()


def _security_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    csp = response.headers.get("Content-Security-Policy")
    if csp is None:
        response.headers["Content-Security-Policy"] = API_CSP
    elif "frame-ancestors" not in csp:
        response.headers["Content-Security-Policy"] = f"{csp}; frame-ancestors 'none'"
    # Consent data and errors about it must not sit in a shared or browser cache.
    if request.path.startswith("/v1/") or response.mimetype in NO_STORE_TYPES:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    response.headers.pop("Server", None)
    return response


def _access_log(response: Response) -> Response:
    # The route template, never the raw path: paths hold patient references.
    rule = request.url_rule
    principal = g.get("principal")
    started = g.get("security_started")
    access_log.info(
        "request",
        extra={
            "method": request.method,
            "route": rule.rule if rule is not None else None,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2) if started else None,
            "client_id": principal.client_id if principal is not None else None,
            # Set by the first hook of every request, even one refused before
            # the others ran (a 413 while reading the body).
            "request_id": g.get("request_id"),
            "client_request_id": g.get("client_request_id"),
        },
    )
    return response
