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
from consent_service.outbox.validation import EMERGENCY_ACCESS, EVENT_TYPES, shared
from consent_service.timefmt import format_instant

__all__ = [
    "EMERGENCY_ACCESS",
    "EVENT_TYPES",
    "SPEC_VERSION",
    "add_event",
    "add_typed_event",
    "event_source",
    "structured_cloudevent",
]

SPEC_VERSION = "1.0"

_events = cast(Table, OutboxEvent.__table__)


def event_source(organization: str) -> str:
    return f"/organizations/{organization}"


def add_event(session: Session, *, snapshot: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Insert the CloudEvent announcing ``snapshot`` (a version's wire form); return its row."""
    row = add_typed_event(
        session,
        event_type=f"consent.{snapshot['change']}",
        subject=snapshot["id"],
        version=snapshot["version"],
        organization=snapshot["organization"],
        data=snapshot,
        now=now,
    )
    metrics.CONSENT_CHANGES.labels(snapshot["change"]).inc()
    return row


def add_typed_event(
    session: Session,
    *,
    event_type: str,
    subject: str,
    version: int,
    organization: str,
    data: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """Insert an event of ``event_type`` about ``subject`` (its Kafka key) at ``version``.

    ``subject`` is a consent's id, or an emergency access's: every event of
    one subject goes to one partition, in order. Returns the row inserted.
    """
    shared().check(event_type, data)
    row = {
        "event_id": str(uuid.uuid4()),
        "organization": organization,
        "consent_id": subject,
        "consent_version": version,
        "type": event_type,
        "time": now,
        "payload": json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        "created_at": now,
        "validated": True,
    }
    session.execute(insert(_events), row)
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
