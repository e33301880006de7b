"""The request schemas' building blocks: opaque identifiers, instants, text; request hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError

from consent_service.api.schemas import Instant, PlainText, validate_identifier
from consent_service.services.idempotency import request_fingerprint
from consent_service.timefmt import format_instant


@pytest.mark.parametrize(
    "value",
    ["pat-42", "rpps:10003456789", "a", "A.b_c:d@e/f+g-h", "x" * 128, "12345", "2" * 12],
)
def test_opaque_identifiers_pass(value: str) -> None:
    validate_identifier(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x" * 129,
        "-leading-dash",
        "Jean Dupont",
        "é",
        "a\x00",
        "a\n",
        "\ud800",
        "185057800608436",  # 15-digit NIR
        "1850578006084",  # 13-digit NIR without its key
        "2 85 05 78 006 084 36",
        "1 85 05 78 006 084",
    ],
)
def test_names_controls_and_nir_like_values_fail(value: str) -> None:
    with pytest.raises(ValidationError):
        validate_identifier(value)


def test_instant_normalises_to_utc_and_bounds_the_range() -> None:
    field = Instant()
    loaded = field.deserialize("2026-03-01T10:00:00+02:00")
    assert loaded == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert loaded.tzinfo is UTC
    assert field.deserialize("1900-01-01T00:00:00Z") == datetime(1900, 1, 1, tzinfo=UTC)
    for bad in (
        "8999-12-31T23:00:00-05:00",  # 9000 in UTC
        "1900-01-01T00:30:00+01:00",  # 1899 in UTC
        "0001-01-01T00:00:00+01:00",
        "2026-03-01T10:00:00",
        20260301,
        None,
        "2026-03-01T10:00:00Z" + " " * 30,
    ):
        with pytest.raises(ValidationError):
            field.deserialize(bad)


def test_plain_text_allows_tabs_and_newlines_only() -> None:
    field = PlainText(max_length=10)
    assert field.deserialize("a\tb\nc") == "a\tb\nc"
    for bad in ("a\x00", "\x7f", "\ud800", "\ue000", "x" * 11):
        with pytest.raises(ValidationError):
            field.deserialize(bad)


def test_request_fingerprint_ignores_key_order_only() -> None:
    one = request_fingerprint("POST /v1/consents", {"a": 1, "b": [1, 2]})
    assert one == request_fingerprint("POST /v1/consents", {"b": [1, 2], "a": 1})
    assert one != request_fingerprint("POST /v1/consents", {"a": 1, "b": [2, 1]})
    assert one != request_fingerprint("POST /v1/other", {"a": 1, "b": [1, 2]})
    assert request_fingerprint("POST /x", None) != request_fingerprint("POST /x", {})


def test_format_instant_is_utc_microseconds_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert format_instant(datetime(2026, 1, 1, 1, 0, tzinfo=paris)) == "2026-01-01T00:00:00.000000Z"
    assert format_instant(datetime(2026, 1, 1, 0, 0, 0, 7, tzinfo=UTC)).endswith(".000007Z")
