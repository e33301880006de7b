"""Revocation to enforced everywhere: the mode of ``revocation_latency.py`` with acking kits.

``subscribers`` kits (``consent-events listen --ack-url``), each with its own
store, group and ``events:ack`` key, follow the topic and acknowledge what
they apply. For each revocation the figure is the service's own: from the
revocation being recorded (its ``updated_at``) to the last subscriber's
acknowledgement being recorded (the latest ``acknowledged_at`` in
``GET /v1/consents/{id}/enforcement``), i.e. commit to enforced everywhere.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
PRACTITIONER = "rpps:10003456789"


def enforced_everywhere_latencies(
    base_url: str,
    env: dict[str, str],
    broker: str,
    workdir: Path,
    *,
    organization: str,
    revocations: int,
    pause_ms: int,
    subscribers: int = 3,
) -> list[float]:
    """Seconds from each revocation's commit to its last acknowledgement."""
    desk = _Desk(base_url, _key(env, organization, "consents:read,consents:write", "bench-desk"))
    run = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        for n in range(subscribers):
            key = _key(env, organization, "events:read,events:ack", f"bench-kit-{run}-{n}")
            stack.enter_context(_kit(broker, base_url, key, workdir / f"kit-{run}-{n}", env))
        consent_ids = [desk.grant(f"enf-{run}-{i}") for i in range(revocations)]
        for consent_id in consent_ids:
            _wait_enforced(desk, consent_id, timeout=120)
        pause = random.Random(11)
        latencies = []
        for consent_id in consent_ids:
            time.sleep(pause.uniform(0.5, 1.5) * pause_ms / 1000)
            revoked = desk.revoke(consent_id)
            found = _wait_enforced(desk, consent_id, timeout=30)
            last_ack = max(_instant(s["acknowledged_at"]) for s in found["subscribers"])
            latencies.append((last_ack - _instant(revoked["updated_at"])).total_seconds())
    return latencies


def _wait_enforced(desk: _Desk, consent_id: str, *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = desk.get(f"/v1/consents/{consent_id}/enforcement")
        if found["enforced_everywhere"]:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"{consent_id} was never enforced everywhere: {found}")
        time.sleep(0.02)


def _kit(broker: str, base_url: str, key: str, directory: Path, env: dict[str, str]) -> Any:
    from revocation_latency import _listener  # the benchmark's own process handling

    directory.mkdir()
    command = [
        str(BIN / "consent-events"),
        "listen",
        "--bootstrap-servers",
        broker,
        "--group",
        f"bench-{directory.name}",
        "--store",
        str(directory / "view.db"),
        "--assign",
        "--fetch-max-wait-ms",
        "20",
        "--ack-url",
        base_url,
        "--log-level",
        "WARNING",
    ]
    return _listener(command, directory / "listen.log", {**env, "CONSENT_EVENTS_ACK_KEY": key})


def _key(env: dict[str, str], organization: str, scopes: str, name: str) -> str:
    created = subprocess.run(
        [
            str(BIN / "consent-service"),
            "clients",
            "create",
            "--org",
            organization,
            "--scopes",
            scopes,
            "--name",
            name,
            "--json",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(created.stdout)["api_key"])


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class _Desk:
    """The practice's API calls, over real HTTP."""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url
        self.api_key = api_key

    def grant(self, patient: str) -> str:
        body = {
            "patient_id": patient,
            "practitioner_id": PRACTITIONER,
            "categories": ["radiographs"],
            "purposes": ["care-coordination"],
            "decision": "permit",
            "collection": {"method": "partner-api"},
        }
        return str(self._call("POST", "/v1/consents", body)["id"])

    def revoke(self, consent_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/consents/{consent_id}/revoke", {"reason": "benchmark"})

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return dict(json.load(response))
