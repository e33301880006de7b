"""Writes the event of a consent version in the caller's transaction.

The version row and its outbox row commit together or not at all: there is
no publish here, only an insert that the relay picks up after commit.

The event's data is checked against its JSON Schema here, once, and the row
is marked ``validated``: the relay sends the stored bytes as they are. An
event that fails its schema is a bug in the service; ``InvalidEventData``
rolls the whole change back instead of storing an event nobody could read.
On PostgreSQL a statement trigger on ``outbox_events`` (migration 0005)
sends ``NOTIFY consent_outbox``, delivered when the transaction commits,
which wakes the relay at once; the writer needs no round trip for it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from consent_service import metrics
from consent_service.db.models import OutboxEvent
from consent_service.outbox.validation import EVENT_TYPES, shared
from consent_service.timefmt import format_instant

__all__ = ["EVENT_TYPES", "SPEC_VERSION", "add_event", "event_source", "structured_cloudevent"]

SPEC_VERSION = "1.0"

_events = cast(Table, OutboxEvent.__table__)


def event_source(organization: str) -> str:
    return f"/organizations/{organization}"


def add_event(session: Session, *, snapshot: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Insert the CloudEvent announcing ``snapshot`` (a version's wire form); return its row."""
    event_type = f"consent.{snapshot['change']}"
    shared().check(event_type, snapshot)
    row = {
        "event_id": str(uuid.uuid4()),
        "organization": snapshot["organization"],
        "consent_id": snapshot["id"],
        "consent_version": snapshot["version"],
        "type": event_type,
        "time": now,
        "payload": json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False),
        "created_at": now,
        "validated": True,
    }
    session.execute(insert(_events), row)
    metrics.CONSENT_CHANGES.labels(snapshot["change"]).inc()
    return row


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
