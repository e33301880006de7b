"""The event log for pull subscribers, in commit-safe order."""

from __future__ import annotations

from typing import Any

from flask import Response
from marshmallow import RAISE
from sqlalchemy import select

from consent_service.api.schemas import EventPageSchema, EventQueryArgsSchema
from consent_service.db.models import OutboxEvent
from consent_service.http.auth import requires
from consent_service.http.context import principal, state
from consent_service.http.parsing import ConsentBlueprint
from consent_service.http.writes import json_response
from consent_service.outbox.sequencer import assign_positions
from consent_service.outbox.writer import structured_cloudevent

blp = ConsentBlueprint("events", __name__, url_prefix="/v1", description="Consent events")


@blp.route("/events", methods=["GET"])
@requires("events:read")
@blp.arguments(EventQueryArgsSchema, location="query", unknown=RAISE)
@blp.response(200, EventPageSchema)
def list_events(args: dict[str, Any]) -> Response:
    """Events of your organization after a position, oldest first, as CloudEvents."""
    database = state().database
    with database.reading() as session:
        unpositioned = session.scalar(
            select(OutboxEvent.id).where(OutboxEvent.position.is_(None)).limit(1)
        )
    if unpositioned is not None:
        with database.transaction() as session:
            assign_positions(session)
    with database.reading() as session:
        events = session.scalars(
            select(OutboxEvent)
            .where(
                OutboxEvent.organization == principal().organization,
                OutboxEvent.position > args["after"],
            )
            .order_by(OutboxEvent.position)
            .limit(args["limit"])
        ).all()
    items = [structured_cloudevent(event) for event in events]
    next_after = items[-1]["position"] if items else args["after"]
    return json_response({"items": items, "next_after": next_after})
