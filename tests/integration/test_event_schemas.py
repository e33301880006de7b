"""Every event the service emits validates against schemas/events/*.json (Draft 2020-12).

The events are produced by the real write paths (API, revoke-all, expiry)
and read back twice: from GET /v1/events and from the outbox table.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from sqlalchemy import select

from consent_service.db.models import OutboxEvent
from consent_service.db.session import Database
from consent_service.outbox.writer import EVENT_TYPES
from consent_service.services.consents import expire_consent
from consent_service.timefmt import utcnow
from tests.integration.api_support import (
    EVENT_SCHEMAS,
    amend,
    assert_valid_event_data,
    create_consent,
    days_ago,
    event_validators,
    revoke,
    wire,
)


def emit_every_kind(client: FlaskClient, auth: dict[str, str], database: Database) -> None:
    """Write at least one event of each type, with optional fields both set and unset."""
    full = create_consent(
        client,
        auth,
        valid_from=wire(days_ago(30)),
        valid_until=wire(days_ago(1)),
        reason="paper form \u2014 sign\u00e9",
        collection={"method": "paper", "evidence_ref": "scan-1", "policy_version": "2026-01"},
    )
    bare = create_consent(client, auth, collection={"method": "verbal"})
    amend(client, auth, bare, decision="deny", valid_until=wire(utcnow().replace(year=2030)))
    revoke(client, auth, bare["id"], reason="patient asked")
    create_consent(client, auth, practitioner_id="rpps:leaver")
    client.post("/v1/practitioners/rpps:leaver/revoke-all", json={}, headers=auth)
    with database.transaction() as session:
        expired = expire_consent(session, consent_id=full["id"], expected_version=1, now=utcnow())
    assert expired is not None


def test_published_schemas_are_valid_and_closed() -> None:
    paths = sorted(EVENT_SCHEMAS.glob("consent.*.v1.json"))
    assert {p.name.removesuffix(".v1.json") for p in paths} == set(EVENT_TYPES)
    for path in paths:
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False
        if "collection" in schema["properties"]:  # a consent snapshot (not an emergency access)
            assert schema["properties"]["collection"]["additionalProperties"] is False
        assert set(schema["required"]) == set(schema["properties"])


def test_every_emitted_event_validates(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    emit_every_kind(client, auth, database)

    served = client.get("/v1/events?limit=1000", headers=auth).get_json()["items"]
    with database.reading() as session:
        stored = session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()
        stored_events = [(row.type, json.loads(row.payload)) for row in stored]

    assert Counter(event["type"] for event in served) == Counter(
        {"consent.granted": 3, "consent.amended": 1, "consent.revoked": 2, "consent.expired": 1}
    )
    assert len(stored_events) == len(served)
    for event in served:
        assert_valid_event_data(event["type"], event["data"])
        assert event["type"] == f"consent.{event['data']['change']}"
    for event_type, data in stored_events:
        assert_valid_event_data(event_type, data)
    assert sorted(json.dumps(d, sort_keys=True) for _, d in stored_events) == sorted(
        json.dumps(e["data"], sort_keys=True) for e in served
    )


BROKEN: list[tuple[str, dict[str, Any]]] = [
    ("extra field", {"surprise": 1}),
    (
        "extra collection field",
        {"collection": {"method": "paper", "evidence_ref": None, "policy_version": None, "x": 1}},
    ),
    ("wrong change", {"change": "amended"}),
    ("version 2 on a grant", {"version": 2}),
    ("status revoked on a grant", {"status": "revoked"}),
    ("bad instant", {"recorded_at": "2026-02-30T00:00:00.000000Z"}),
    ("offset instead of Z", {"valid_from": "2026-01-01T00:00:00+00:00"}),
    ("not a uuid", {"id": "consent-1"}),
    ("empty categories", {"categories": []}),
    ("repeated purposes", {"purposes": ["referral", "referral"]}),
    (
        "unknown method",
        {"collection": {"method": "fax", "evidence_ref": None, "policy_version": None}},
    ),
]


def test_schemas_reject_broken_events(client: FlaskClient, auth: dict[str, str]) -> None:
    good = create_consent(client, auth)
    validator = event_validators()["consent.granted"]
    assert validator.is_valid(good)
    accepted = [label for label, change in BROKEN if validator.is_valid({**good, **change})]
    assert accepted == []
    missing = dict(good)
    del missing["reason"]
    assert not validator.is_valid(missing)
