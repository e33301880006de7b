"""Turning an outbox row into its Kafka record, or refusing it as poison.

CloudEvents 1.0 binary content mode (docs/design.md): ``ce_*`` headers,
``content-type: application/json``, key = consent id, value = the data.
Every byte comes from the row (``event_id``, ``time``, the ``payload``
frozen at write time), so a re-send is byte-identical and consumers can
dedupe on ``ce_id``.

The ``cloudevents`` SDK's Kafka binding is not used here: it would add a
runtime dependency and an event object per record for seven headers, and
it formats ``time`` its own way while the contract fixes
``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The relay tests read what was consumed back
with the SDK's ``from_binary`` to prove the records are valid CloudEvents.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from consent_service.outbox.validation import (
    EMERGENCY_ACCESS,
    EventSchemas,
    InvalidEventData,
    shared,
)
from consent_service.outbox.writer import SPEC_VERSION, event_source
from consent_service.timefmt import format_instant

ZERO = timedelta(0)
TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
CONTENT_TYPE = b"application/json"


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka record: CloudEvents binary mode (``ce_*`` headers, value = data)."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class PoisonEvent(Exception):
    """This row can never become a valid record; the message says why (no data)."""


class OutboxRow(Protocol):
    event_id: str
    organization: str
    consent_id: str
    consent_version: int
    type: str
    time: datetime
    payload: str
    validated: bool


class Envelope:
    """Builds rows' records; checks the rows the writer did not check."""

    def __init__(self, schemas: EventSchemas | None = None) -> None:
        self._schemas = schemas or shared()
        self._good_topics: set[str] = set()

    def message(self, row: OutboxRow, topic: str) -> Message:
        """The record for ``row`` on ``topic``; ``PoisonEvent`` if it cannot be one.

        A row the writer ``validated`` is passed through as it is stored: its
        payload is neither parsed nor checked again. Any other row is parsed,
        checked against its schema and compared with its own columns.
        """
        if not self._schemas.knows(row.type):
            raise PoisonEvent(f"unknown event type {row.type!r}")
        try:
            value = row.payload.encode("utf-8")
        except UnicodeError as error:
            raise PoisonEvent(f"payload is not UTF-8 JSON ({type(error).__name__})") from None
        if not row.validated:
            self._check(row, value)
        if topic not in self._good_topics:
            if not TOPIC_NAME.match(topic):
                raise PoisonEvent("organization cannot form a Kafka topic name")
            self._good_topics.add(topic)
        headers = (
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", row.event_id.encode()),
            ("ce_type", row.type.encode()),
            ("ce_source", event_source(row.organization).encode()),
            ("ce_subject", row.consent_id.encode()),
            ("ce_time", _ce_time(row.time)),
            ("content-type", CONTENT_TYPE),
        )
        return Message(topic=topic, key=row.consent_id.encode(), value=value, headers=headers)

    def _check(self, row: OutboxRow, value: bytes) -> None:
        try:
            data = json.loads(value)
        except ValueError as error:
            raise PoisonEvent(f"payload is not UTF-8 JSON ({type(error).__name__})") from None
        try:
            self._schemas.check(row.type, data)
        except InvalidEventData as error:
            raise PoisonEvent(str(error)) from None
        if (
            data["id"] != row.consent_id
            or data["version"] != row.consent_version
            or data["organization"] != row.organization
            or _type_of(data) != row.type
        ):
            raise PoisonEvent("payload does not match the row's consent, version or type")


def _type_of(data: dict[str, object]) -> str:
    """The event type a payload announces: an emergency access's, or its consent change's."""
    if "opened_at" in data:  # only an emergency access has one
        return EMERGENCY_ACCESS
    return f"consent.{data['change']}"


def _ce_time(value: datetime) -> bytes:
    """``format_instant`` for ``ce_time``; ``isoformat`` is several times cheaper than strftime."""
    if value.utcoffset() == ZERO:
        return (value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z").encode()
    return format_instant(value).encode()


def topic_for(base_topic: str, mode: str, organization: str) -> str:
    """``consent.events``, or ``consent.events.{organization}`` in per-organization mode."""
    return f"{base_topic}.{organization}" if mode == "per-organization" else base_topic
