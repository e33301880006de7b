"""Emergency accesses in the kit: the view permits while one is open, as the service does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit_helpers import ORG, PATIENT, PRACTITIONER, event, new_id, snapshot

from consent_events import ConsentView, Store
from consent_events.envelope import Event, from_kafka_record, from_structured
from consent_events.store import APPLIED, DUPLICATE, STALE

OPENED_AT = "2025-04-01T10:00:00.000000Z"
EXPIRES_AT = "2025-04-01T11:00:00.000000Z"
DURING = datetime(2025, 4, 1, 10, 30, tzinfo=UTC)


def access(access_id: str, change: str = "opened", **overrides: Any) -> dict[str, Any]:
    closed = change != "opened"
    data = {
        "id": access_id,
        "organization": ORG,
        "patient_id": PATIENT,
        "practitioner_id": PRACTITIONER,
        "status": {"opened": "open"}.get(change, change),
        "version": 2 if closed else 1,
        "change": change,
        "opened_by": "token:dr-x",
        "opened_at": OPENED_AT,
        "expires_at": EXPIRES_AT,
        "closed_at": "2025-04-01T10:40:00.000000Z" if closed else None,
        "closed_by": "token:dr-x" if closed else None,
    }
    data.update(overrides)
    return data


def access_event(data: dict[str, Any], event_id: str | None = None) -> Event:
    return from_structured(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "type": "consent.emergency-access",
            "source": f"/organizations/{data['organization']}",
            "subject": data["id"],
            "time": OPENED_AT,
            "datacontenttype": "application/json",
            "data": data,
        }
    )


def _view(store: Store | None = None) -> ConsentView:
    view = ConsentView(store or Store(), organization=ORG)
    view.store.heartbeat(lag_events=0, current_as_of=time.time())
    # The patient refused this practitioner.
    view.store.apply(
        [
            event(
                snapshot(new_id(), decision="deny", valid_from=OPENED_AT[:10] + "T00:00:00.000000Z")
            )
        ]
    )
    return view


def _ask(view: ConsentView, at: datetime = DURING):
    return view.is_permitted(PATIENT, PRACTITIONER, "radiographs", "care-coordination", at=at)


def test_an_open_access_permits_over_a_deny_within_its_window_only() -> None:
    view = _view()
    access_id = new_id()
    [change] = view.store.apply([access_event(access(access_id))])
    assert (change.outcome, change.consent_id, change.version) == (APPLIED, access_id, 1)
    answer = _ask(view)
    assert (answer.decision, answer.reason, answer.emergency_access_id) == (
        "permit",
        "emergency-access",
        access_id,
    )
    assert answer.consent_id is None and answer.permitted
    before = _ask(view, datetime(2025, 4, 1, 9, 59, tzinfo=UTC))
    after = _ask(view, datetime(2025, 4, 1, 11, 0, tzinfo=UTC))
    assert before.reason == after.reason == "denied-by-consent"
    colleague = view.is_permitted(
        PATIENT, "rpps:10009999999", "radiographs", "care-coordination", at=DURING
    )
    assert colleague.reason == "no-consent"


def test_an_ended_access_stops_at_its_end_whatever_the_order_of_arrival() -> None:
    view = _view()
    access_id = new_id()
    opened, ended = access_event(access(access_id)), access_event(access(access_id, "ended"))
    assert [c.outcome for c in view.store.apply([ended, opened, ended])] == [
        APPLIED,
        STALE,
        DUPLICATE,
    ]
    assert _ask(view).emergency_access_id == access_id  # 10:30, before it ended at 10:40
    assert _ask(view, datetime(2025, 4, 1, 10, 41, tzinfo=UTC)).reason == "denied-by-consent"


def test_another_organizations_access_does_not_count() -> None:
    view = _view()
    view.store.apply([access_event(access(new_id(), organization="org-b"))])
    assert _ask(view).reason == "denied-by-consent"


def test_access_events_come_off_kafka_records_and_are_not_acknowledged() -> None:
    store = Store(queue_acks=True)
    view = _view(store)
    data = access(new_id())
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", new_id().encode()),
        ("ce_type", b"consent.emergency-access"),
        ("ce_source", f"/organizations/{ORG}".encode()),
        ("ce_subject", data["id"].encode()),
        ("ce_time", OPENED_AT.encode()),
        ("content-type", b"application/json"),
    ]
    decoded = from_kafka_record(data["id"].encode(), json.dumps(data).encode(), headers)
    store.apply([decoded])
    assert _ask(view).reason == "emergency-access"
    with store.transaction() as db:
        queued = [row[0] for row in db.execute("SELECT consent_id FROM pending_acks")]
    assert data["id"] not in queued and len(queued) == 1  # the consent's grant only


def test_check_names_the_emergency_access_that_permitted(tmp_path: Path) -> None:
    path = tmp_path / "view.db"
    data = access(new_id())
    store = Store(str(path))
    store.apply([access_event(data)], lag_events=0, current_as_of=time.time())
    store.close()
    question = [PATIENT, PRACTITIONER, "radiographs", "care-coordination"]
    command = [sys.executable, "-m", "consent_events.cli", "check", "--store", str(path)]
    answer = subprocess.run(
        [*command, *question, "--at", "2025-04-01T10:30:00Z"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {
        "decision": "permit",
        "consent_id": None,
        "version": None,
        "reason": "emergency-access",
        "emergency_access_id": data["id"],
    }
