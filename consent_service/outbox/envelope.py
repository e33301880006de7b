"""Turning an outbox row into its Kafka record, or refusing it as poison.

CloudEvents 1.0 binary content mode (DESIGN.md): ``ce_*`` headers,
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
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import jsonschema_rs
from jsonschema import Draft202012Validator

from consent_service.outbox.writer import EVENT_TYPES, SPEC_VERSION, event_source
from consent_service.timefmt import format_instant

# The published contracts, kept at the top of the repository (DESIGN.md layout).
# A copy of the published ``schemas/events`` shipped inside the package, so an
# installed relay finds it; tests/relay/test_event_schema_copy.py fails on drift.
SCHEMA_DIR = Path(__file__).resolve().parent / "event_schemas"
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


class Envelope:
    """Validates rows against the event schemas and builds their records."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        # jsonschema-rs checks each event in ~2 µs where the pure-Python
        # validator takes ~150 µs, which alone would cap the relay near 7k
        # events/s; the Python one only explains the rare failure.
        self._validators: dict[str, tuple[Any, Draft202012Validator]] = {}
        for event_type in EVENT_TYPES:
            path = schema_dir / f"{event_type}.v1.json"
            schema = json.loads(path.read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
            self._validators[event_type] = (
                jsonschema_rs.validator_for(schema),
                Draft202012Validator(schema),
            )

    def message(self, row: OutboxRow, topic: str) -> Message:
        """The record for ``row`` on ``topic``; ``PoisonEvent`` if it cannot be one."""
        validators = self._validators.get(row.type)
        if validators is None:
            raise PoisonEvent(f"unknown event type {row.type!r}")
        try:
            value = row.payload.encode("utf-8")
            data = json.loads(value)
        except (UnicodeError, ValueError) as error:
            raise PoisonEvent(f"payload is not UTF-8 JSON ({type(error).__name__})") from None
        fast, explaining = validators
        if not fast.is_valid(data):
            errors = sorted(explaining.iter_errors(data), key=lambda e: list(map(str, e.path)))
            where, rule = (
                ("/".join(map(str, errors[0].path)) or "(root)", errors[0].validator)
                if errors
                else ("(root)", "schema")
            )
            # Name the field and the rule, never the value: it may be personal data.
            raise PoisonEvent(f"fails {row.type}.v1 schema at {where}: {rule}")
        if (
            data["id"] != row.consent_id
            or data["version"] != row.consent_version
            or data["organization"] != row.organization
            or f"consent.{data['change']}" != row.type
        ):
            raise PoisonEvent("payload does not match the row's consent, version or type")
        if not TOPIC_NAME.match(topic):
            raise PoisonEvent("organization cannot form a Kafka topic name")
        headers = (
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", row.event_id.encode()),
            ("ce_type", row.type.encode()),
            ("ce_source", event_source(row.organization).encode()),
            ("ce_subject", row.consent_id.encode()),
            ("ce_time", format_instant(row.time).encode()),
            ("content-type", CONTENT_TYPE),
        )
        return Message(topic=topic, key=row.consent_id.encode(), value=value, headers=headers)


def topic_for(base_topic: str, mode: str, organization: str) -> str:
    """``consent.events``, or ``consent.events.{organization}`` in per-organization mode."""
    return f"{base_topic}.{organization}" if mode == "per-organization" else base_topic
