"""Liveness and readiness."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, Response
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from consent_service.db.models import OutboxEvent
from consent_service.http.context import state
from consent_service.http.writes import json_response
from consent_service.timefmt import utcnow

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> Response:
    """The process answers."""
    return json_response({"status": "ok"})


@blp.get("/readyz")
def readyz() -> Response:
    """The database answers; the outbox backlog and its age are reported."""
    current = state()
    try:
        with current.database.read_only() as connection:
            connection.execute(text("SELECT 1"))
            backlog, oldest = connection.execute(
                select(func.count(), func.min(OutboxEvent.created_at)).where(
                    OutboxEvent.published_at.is_(None)
                )
            ).one()
    except SQLAlchemyError:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    age = _age_seconds(oldest)
    relaying = bool(current.settings.kafka_bootstrap_servers)
    outbox = {
        "backlog": backlog,
        "oldest_age_seconds": age,
        "relay_configured": relaying,
        "lagging": relaying and age > current.settings.outbox_lag_threshold_seconds,
    }
    return json_response({"status": "ready", "database": "ok", "outbox": outbox})


def _age_seconds(oldest: datetime | None) -> float:
    if oldest is None:
        return 0.0
    return round(max((utcnow() - oldest).total_seconds(), 0.0), 3)
