"""Decoding and validating events in both wire forms."""

from __future__ import annotations

import json

import pytest
from kit_helpers import new_id, record, snapshot, structured

from consent_events.envelope import InvalidEvent, from_kafka_record, from_structured


def test_binary_mode_record_decodes_to_the_snapshot() -> None:
    data = snapshot(new_id(), 2, change="revoked")
    key, value, headers = record(data, "e-1")
    event = from_kafka_record(key, value, headers)
    assert (event.event_id, event.type, event.consent_id, event.version) == (
        "e-1",
        "consent.revoked",
        data["id"],
        2,
    )
    assert event.organization == "org-a"
    assert dict(event.data) == data


def test_structured_event_decodes_to_the_same_event_as_the_record() -> None:
    data = snapshot(new_id())
    assert from_structured(structured(data, "e-1")) == from_kafka_record(*record(data, "e-1"))


def _replace_header(headers, name, value):
    return [(n, value if n == name else v) for n, v in headers]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda k, v, h: (k, v, _replace_header(h, "ce_specversion", b"0.3")), "specversion"),
        (lambda k, v, h: (k, v, _replace_header(h, "ce_type", b"consent.deleted")), "unknown"),
        (lambda k, v, h: (k, v, _replace_header(h, "ce_type", b"consent.amended")), "data does"),
        (lambda k, v, h: (k, v, _replace_header(h, "ce_subject", b"other")), "subject"),
        (lambda k, v, h: (k, v, _replace_header(h, "ce_source", b"/organizations/b")), "source"),
        (lambda k, v, h: (k, v, _replace_header(h, "content-type", b"text/plain")), "content"),
        (lambda k, v, h: (k, v, [n for n in h if n[0] != "ce_id"]), "id is missing"),
        (lambda k, v, h: (k, v, [*h, ("ce_id", b"again")]), "twice"),
        (lambda k, v, h: (b"another-consent", v, h), "key"),
        (lambda k, v, h: (k, b"{not json", h), "not JSON"),
        (lambda k, v, h: (k, None, h), "no value"),
    ],
)
def test_a_malformed_record_is_rejected_with_a_reason(mutate, message) -> None:
    with pytest.raises(InvalidEvent, match=message) as caught:
        from_kafka_record(*mutate(*record(snapshot(new_id()))))
    assert caught.value.consent_id is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 0),
        ("categories", []),
        ("decision", "maybe"),
        ("valid_from", "2025-03-01"),
        ("unexpected", True),
    ],
)
def test_data_outside_the_published_schema_is_rejected(field, value) -> None:
    data = snapshot(new_id())
    data[field] = value
    with pytest.raises(InvalidEvent, match=r"data does not match consent\.granted\.v1") as caught:
        from_kafka_record(*record(data))
    # The reason names where, never what: values may be personal data.
    assert json.dumps(value) not in caught.value.reason


def test_structured_event_needs_json_data() -> None:
    document = structured(snapshot(new_id()))
    document["datacontenttype"] = "application/xml"
    with pytest.raises(InvalidEvent, match="datacontenttype"):
        from_structured(document)
