"""Opaque page cursors: the resume key of a listing (creation instant, consent id)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from consent_service.timefmt import format_instant


def encode_cursor(resume: tuple[datetime, str] | None) -> str | None:
    """The cursor of the next page, or None when there is none."""
    if resume is None:
        return None
    raw = json.dumps([format_instant(resume[0]), resume[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | bool:
    """The resume key of a cursor, or False for anything this service did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, consent_id = json.loads(raw)
        instant = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        if instant.tzinfo is None or not isinstance(consent_id, str):
            return False
        return instant, str(uuid.UUID(consent_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        return False
