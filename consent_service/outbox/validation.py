"""The event JSON Schemas, checked once: when an event is written.

The writer checks every event's data against ``{type}.v1.json``
before the row is staged (``outbox.writer``), and marks the row
``validated``; the relay then passes such a row's bytes to Kafka without
parsing them again. The relay still checks rows that are not marked (written
before this check existed, or by hand) with the same ``EventSchemas``.

This module imports no Kafka client: the API process loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator

EMERGENCY_ACCESS = "consent.emergency-access"
EVENT_TYPES = (
    "consent.granted",
    "consent.amended",
    "consent.revoked",
    "consent.expired",
    EMERGENCY_ACCESS,
)

# A copy of the published ``schemas/events`` shipped inside the package, so an
# installed service finds it; tests/relay/test_event_schema_copy.py fails on drift.
SCHEMA_DIR = Path(__file__).resolve().parent / "event_schemas"


class InvalidEventData(ValueError):
    """The data fails its event schema; the message names the field and rule, never the value."""


class EventSchemas:
    """One fast and one explaining validator per event type."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR) -> None:
        # jsonschema-rs checks an event in a few µs where the pure-Python
        # validator takes ~150 µs; the Python one only explains the rare failure.
        self._validators: dict[str, tuple[Any, Draft202012Validator]] = {}
        for event_type in EVENT_TYPES:
            schema = json.loads((schema_dir / f"{event_type}.v1.json").read_text(encoding="utf-8"))
            Draft202012Validator.check_schema(schema)
            self._validators[event_type] = (
                jsonschema_rs.validator_for(schema),
                Draft202012Validator(schema),
            )

    def knows(self, event_type: str) -> bool:
        return event_type in self._validators

    def check(self, event_type: str, data: Any) -> None:
        """Raise ``InvalidEventData`` unless ``data`` is a valid ``event_type`` event."""
        validators = self._validators.get(event_type)
        if validators is None:
            raise InvalidEventData(f"unknown event type {event_type!r}")
        fast, explaining = validators
        if fast.is_valid(data):
            return
        errors = sorted(explaining.iter_errors(data), key=lambda e: list(map(str, e.path)))
        where, rule = (
            ("/".join(map(str, errors[0].path)) or "(root)", errors[0].validator)
            if errors
            else ("(root)", "schema")
        )
        # Name the field and the rule, never the value: it may be personal data.
        raise InvalidEventData(f"fails {event_type}.v1 schema at {where}: {rule}")


_shared: EventSchemas | None = None


def shared() -> EventSchemas:
    """The process's validators, loaded on first use (not at import, not before a fork)."""
    global _shared
    if _shared is None:
        _shared = EventSchemas()
    return _shared
