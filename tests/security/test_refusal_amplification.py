"""No amplification: junk keys are throttled per address and summed up in the audit log;
a batch of N checks counts N against the decisions budget."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
from datetime import timedelta

from flask.testing import FlaskClient

from consent_service import audit, create_app
from consent_service.audit.refusals import RefusalTally, Source
from consent_service.config import Settings
from consent_service.db.session import Database
from consent_service.timefmt import utcnow
from tests.conftest import KeyFactory
from tests.security.conftest import audit_rows
from tests.support.waiting import wait_until

QUESTION = {
    "patient_id": "pat-1",
    "practitioner_id": "rpps:1",
    "category": "billing",
    "purpose": "referral",
}


def _client(
    settings: Settings, database: Database, limits: str, address: str | None = None
) -> tuple[FlaskClient, str]:
    """A client of an app with ``limits``, calling from an address of its own.

    The ``auth-failures`` budget is per address and outlives a test (SQLite
    counts in a file beside the database): each test takes a fresh address.
    """
    app = create_app(dataclasses.replace(settings, rate_limits=limits), database=database)
    if address is None:
        address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client, address


def test_junk_keys_are_throttled_and_summed_up(
    settings: Settings, database: Database, api_key: KeyFactory
) -> None:
    client, address = _client(settings, database, "auth-failures=20/minute")
    junk = {"Authorization": "Bearer csk_0123456789abcdef_junk"}
    statuses = [client.get("/v1/consents", headers=junk).status_code for _ in range(300)]
    assert statuses == [401] * 20 + [429] * 280
    throttled = client.get("/v1/consents", headers=junk)
    assert throttled.mimetype == "application/problem+json"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # A valid key from the same address is not refused for what junk keys did.
    assert client.get("/v1/consents", headers=api_key()).status_code == 200

    rows = audit_rows(database, outcome="unauthorized")
    assert len(rows) == 1
    (row,) = rows
    objects = json.loads(row.objects)
    assert (row.action, row.status) == ("authentication", 401)
    assert objects["key"] == "unknown" and objects["address"] == address
    assert objects["count"] == 301
    assert row.request_id and row.client_id is None


def test_each_address_and_reason_has_its_own_budget_and_entry(
    settings: Settings, database: Database
) -> None:
    first, first_address = _client(settings, database, "auth-failures=3/minute")
    ipv6 = f"2001:db8::{random.randrange(1, 0xFFFF):x}"
    second, second_address = _client(settings, database, "auth-failures=3/minute", ipv6)
    for _ in range(5):
        first.get("/v1/consents")
        first.get("/v1/consents", headers={"Authorization": "Bearer garbage"})
    assert second.get("/v1/consents").status_code == 401
    entries = {
        (objects["address"], objects["key"]): objects["count"]
        for objects in (json.loads(row.objects) for row in audit_rows(database))
    }
    assert entries == {
        (first_address, "missing"): 5,
        (first_address, "malformed"): 5,
        (second_address, "missing"): 1,
    }


def test_one_entry_per_window_and_the_timer_ends_quiet_windows() -> None:
    handed: list[audit.Record] = []
    arrived = threading.Event()

    def sink(records: list[audit.Record]) -> None:
        handed.extend(records)
        arrived.set()

    tally = RefusalTally(sink, window_s=60)
    source = Source(address="192.0.2.1", reason="unknown")
    start = utcnow()
    for seconds in (0, 1, 59):
        tally.count(source, request_id=f"r{seconds}", now=start + timedelta(seconds=seconds))
    assert handed == []
    tally.count(source, request_id="r60", now=start + timedelta(seconds=60))
    (first,) = handed
    assert first.objects["count"] == 3 and first.request_id == "r0"
    assert first.occurred_at == start
    tally.flush()
    assert [record.objects["count"] for record in handed] == [3, 1]

    quick = RefusalTally(sink, window_s=0.2)
    arrived.clear()
    quick.count(source, request_id="late", now=utcnow())
    assert arrived.wait(timeout=10), "the timer never ended the window"
    assert handed[-1].request_id == "late" and handed[-1].objects["count"] == 1
    # The timer stops once no window is open.
    wait_until(lambda: quick._timer is None, 10, "the timer to stop")


def test_a_batch_counts_each_check_against_the_decisions_budget(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    client, _ = _client(settings, database, "decisions=10/minute")

    def batch(size: int) -> int:
        body = {"checks": [QUESTION] * size}
        return client.post("/v1/decisions:batch", json=body, headers=auth).status_code

    assert batch(6) == 200
    refused = client.post("/v1/decisions:batch", json={"checks": [QUESTION] * 5}, headers=auth)
    assert refused.status_code == 429
    assert "counts for 5" in refused.get_json()["detail"]
    # The refused batch took nothing: the 4 checks left still fit.
    assert batch(4) == 200
    assert batch(1) == 429
