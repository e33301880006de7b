"""The relay's packaged event schemas are exactly the published ones."""

from __future__ import annotations

from consent_service.outbox.validation import SCHEMA_DIR
from tests.conftest import REPO_ROOT

PUBLISHED = REPO_ROOT / "schemas" / "events"


def test_the_packaged_copy_matches_schemas_events() -> None:
    published = {path.name: path.read_bytes() for path in PUBLISHED.glob("*.json")}
    packaged = {path.name: path.read_bytes() for path in SCHEMA_DIR.glob("*.json")}
    assert published, "no published event schemas found"
    assert packaged == published, (
        "consent_service/outbox/event_schemas/ drifted from schemas/events/: "
        "cp schemas/events/*.json consent_service/outbox/event_schemas/"
    )
