"""The one text form of an instant on the wire: UTC with microseconds and ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def format_instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    return datetime.now(UTC)
