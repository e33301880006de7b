"""Reading consent events off the wire and checking them before they touch the store.

Two wire forms carry the same event: a Kafka record in CloudEvents binary
mode (attributes in ``ce_*`` headers, the consent snapshot as the value) and
a CloudEvents structured JSON object from the service's ``GET /v1/events``.
Both become one :class:`Event`, validated against the JSON Schema published
for its type, so the store never sees a half-understood change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

EVENT_TYPES = (
    "consent.granted",
    "consent.amended",
    "consent.revoked",
    "consent.expired",
    # An emergency access: ``consent_id`` and ``version`` are then the access's (emergency.py).
    "consent.emergency-access",
)
SPEC_VERSION = "1.0"
_REQUIRED_ATTRIBUTES = ("id", "type", "source", "subject", "time")


class InvalidEvent(ValueError):
    """An event that cannot be applied; ``consent_id`` is set when the event names one."""

    def __init__(self, reason: str, *, event_id: str | None = None, consent_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.consent_id = consent_id


@dataclass(frozen=True, slots=True)
class Event:
    """One validated consent event: CloudEvents attributes plus the consent snapshot."""

    event_id: str
    type: str
    source: str
    subject: str
    time: str
    data: Mapping[str, Any]

    @property
    def consent_id(self) -> str:
        return str(self.data["id"])

    @property
    def version(self) -> int:
        return int(self.data["version"])

    @property
    def organization(self) -> str:
        return str(self.data["organization"])


@cache
def validator_for(event_type: str) -> Draft202012Validator:
    """The validator of the schema shipped in this package for ``event_type``."""
    text = resources.files("consent_events").joinpath(f"schemas/{event_type}.v1.json").read_text()
    return Draft202012Validator(json.loads(text))


def from_kafka_record(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> Event:
    """Decode a CloudEvents binary-mode Kafka record, or raise :class:`InvalidEvent`."""
    attributes: dict[str, str] = {}
    for name, raw in headers or ():
        if name in attributes:
            raise InvalidEvent(f"header {name} appears twice", consent_id=_decode_key(key))
        try:
            attributes[name] = (raw or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent(f"header {name} is not UTF-8", consent_id=_decode_key(key)) from None
    consent_id = _decode_key(key) or attributes.get("ce_subject")
    event_id = attributes.get("ce_id")
    content_type = attributes.get("content-type", "")
    if content_type.split(";")[0].strip() != "application/json":
        raise InvalidEvent(
            f"content-type {content_type!r} is not application/json",
            event_id=event_id,
            consent_id=consent_id,
        )
    if value is None:
        raise InvalidEvent("record has no value", event_id=event_id, consent_id=consent_id)
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidEvent("value is not JSON", event_id=event_id, consent_id=consent_id) from None
    envelope = {
        "specversion": attributes.get("ce_specversion"),
        **{name: attributes.get(f"ce_{name}") for name in _REQUIRED_ATTRIBUTES},
    }
    event = _build(envelope, data, consent_id=consent_id)
    if key is not None and _decode_key(key) != event.consent_id:
        raise InvalidEvent(
            "record key is not the consent id", event_id=event.event_id, consent_id=consent_id
        )
    return event


def from_structured(document: Mapping[str, Any]) -> Event:
    """Decode one CloudEvents structured JSON object (``GET /v1/events``), or raise."""
    if not isinstance(document, Mapping):
        raise InvalidEvent("event is not a JSON object")
    datacontenttype = document.get("datacontenttype", "application/json")
    if datacontenttype != "application/json":
        raise InvalidEvent(
            f"datacontenttype {datacontenttype!r} is not application/json",
            event_id=_text(document.get("id")),
        )
    return _build(document, document.get("data"), consent_id=_text(document.get("subject")))


def _build(envelope: Mapping[str, Any], data: Any, *, consent_id: str | None) -> Event:
    """Check the attributes, the data against its schema, and that both agree."""
    event_id = _text(envelope.get("id"))
    if envelope.get("specversion") != SPEC_VERSION:
        raise InvalidEvent(
            f"specversion {envelope.get('specversion')!r} is not {SPEC_VERSION}",
            event_id=event_id,
            consent_id=consent_id,
        )
    for name in _REQUIRED_ATTRIBUTES:
        if not _text(envelope.get(name)):
            raise InvalidEvent(
                f"attribute {name} is missing", event_id=event_id, consent_id=consent_id
            )
    event_type = str(envelope["type"])
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(
            f"unknown event type {event_type!r}", event_id=event_id, consent_id=consent_id
        )
    errors = sorted(validator_for(event_type).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(part) for part in errors[0].path) or "(root)"
        # The message names the field and the rule, never the value: values may be personal data.
        raise InvalidEvent(
            f"data does not match {event_type}.v1 at {where} ({errors[0].validator})",
            event_id=event_id,
            consent_id=consent_id,
        )
    event = Event(
        event_id=str(envelope["id"]),
        type=event_type,
        source=str(envelope["source"]),
        subject=str(envelope["subject"]),
        time=str(envelope["time"]),
        data=data,
    )
    if event.subject != event.consent_id:
        raise InvalidEvent(
            "subject is not the consent id", event_id=event_id, consent_id=consent_id
        )
    if event.source != f"/organizations/{event.organization}":
        raise InvalidEvent(
            "source does not name the consent's organization",
            event_id=event_id,
            consent_id=consent_id,
        )
    return event


def _decode_key(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
