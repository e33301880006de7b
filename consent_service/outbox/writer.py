"""Writes the event of a consent version in the caller's transaction.

The version row and its outbox row commit together or not at all: there is
no publish here, only an insert that the relay picks up after commit.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from consent_service import metrics
from consent_service.db.models import OutboxEvent
from consent_service.timefmt import format_instant

SPEC_VERSION = "1.0"
EVENT_TYPES = ("consent.granted", "consent.amended", "consent.revoked", "consent.expired")


def event_source(organization: str) -> str:
    return f"/organizations/{organization}"


def add_event(session: Session, *, snapshot: dict[str, Any], now: datetime) -> OutboxEvent:
    """Stage the CloudEvent announcing ``snapshot`` (a version's wire form)."""
    event = OutboxEvent(
        event_id=str(uuid.uuid4()),
        organization=snapshot["organization"],
        consent_id=snapshot["id"],
        consent_version=snapshot["version"],
        type=f"consent.{snapshot['change']}",
        time=now,
        payload=json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False),
        created_at=now,
    )
    session.add(event)
    metrics.CONSENT_CHANGES.labels(snapshot["change"]).inc()
    return event


def structured_cloudevent(event: OutboxEvent) -> dict[str, Any]:
    """The event in CloudEvents structured JSON form, for pull subscribers."""
    return {
        "specversion": SPEC_VERSION,
        "id": event.event_id,
        "type": event.type,
        "source": event_source(event.organization),
        "subject": event.consent_id,
        "time": format_instant(event.time),
        "datacontenttype": "application/json",
        "position": event.position,
        "data": json.loads(event.payload),
    }
