"""Enforcement receipts end to end: serve, relay, a real broker and several kits.

Each kit is the ``consent-events listen --ack-url`` command, acknowledging
to the service what it applied. The service's answers come over HTTP only.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from consent_events import ConsentView, ConsentViewUnavailable
from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.broker import free_port, running_broker, wait_for_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ORG = "org-receipts"
TOPIC = "consent.events"
BIN = Path(sys.executable).parent
PRACTITIONER = "rpps:10003456789"


@dataclass
class Service:
    base_url: str
    env: dict[str, str]
    workdir: Path
    bootstrap: str
    keys: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "consent-service"), *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def client(self, scopes: str, name: str, org: str = ORG) -> tuple[str, str]:
        created = json.loads(
            self.cli(
                "clients", "create", "--org", org, "--scopes", scopes, "--name", name, "--json"
            )
        )
        return created["client_id"], created["api_key"]

    def call(self, key: str, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("receipts")
    with running_broker() as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(TOPIC, 3, 1, topic_configs={"retention.ms": "-1"})])
        admin.close()
        env = {
            **os.environ,
            "CONSENT_DATABASE_URL": f"sqlite:///{workdir / 'consent.db'}",
            "CONSENT_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "CONSENT_KAFKA_TOPIC": TOPIC,
            "CONSENT_KAFKA_PARTITIONS": "3",
            "CONSENT_KAFKA_REPLICATION": "1",
            "CONSENT_RATE_LIMITS": "off",
            "CONSENT_SECRET_KEYS": "receipts-signing-key-0123456789abcdef",
        }
        port, metrics_port = free_port(), free_port()
        found = Service(f"http://127.0.0.1:{port}", env, workdir, broker.bootstrap)
        found.cli("db", "upgrade")
        _, found.keys["practice"] = found.client(
            "consents:read,consents:write,events:read", "practice-desk"
        )
        cli = str(BIN / "consent-service")
        relay = [cli, "relay", "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)]
        with (
            process([cli, "serve", "--bind", f"127.0.0.1:{port}"], env, workdir / "serve.log"),
            process(relay, env, workdir / "relay.log"),
        ):
            wait_for_port(port, timeout=60)
            yield found


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        running = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield running
        finally:
            running.send_signal(signal.SIGTERM)
            try:
                running.wait(timeout=20)
            except subprocess.TimeoutExpired:
                running.kill()
                running.wait()


@dataclass
class Kit:
    name: str
    subscriber_id: str
    key: str
    store: Path
    group: str

    def command(self, service: Service, ack_url: str | None = None) -> list[str]:
        return [
            str(BIN / "consent-events"),
            "listen",
            "--bootstrap-servers",
            service.bootstrap,
            "--group",
            self.group,
            "--store",
            str(self.store),
            "--topic",
            TOPIC,
            "--organization",
            ORG,
            "--assign",
            "--ack-url",
            ack_url or service.base_url,
        ]

    @contextmanager
    def running(self, service: Service, ack_url: str | None = None) -> Iterator[None]:
        env = {**service.env, "CONSENT_EVENTS_ACK_KEY": self.key}
        log = service.workdir / f"{self.name}.log"
        with process(self.command(service, ack_url), env, log):
            yield

    def applied_version(self, consent_id: str) -> int | None:
        if not self.store.exists():
            return None
        view = ConsentView(str(self.store))
        try:
            return view.store.version_of(consent_id)
        finally:
            view.close()

    def pending_acks(self) -> int:
        with sqlite3.connect(self.store) as db:
            return int(db.execute("SELECT count(*) FROM pending_acks").fetchone()[0])


def new_kit(service: Service, tmp_path: Path, name: str) -> Kit:
    subscriber_id, key = service.client("events:read,events:ack", name)
    return Kit(name, subscriber_id, key, tmp_path / f"{name}.db", f"g-{uuid.uuid4().hex[:8]}")


def grant_and_revoke(service: Service) -> dict[str, Any]:
    key = service.keys["practice"]
    body = {
        "patient_id": f"pat-{uuid.uuid4().hex[:10]}",
        "practitioner_id": PRACTITIONER,
        "categories": ["radiographs"],
        "purposes": ["care-coordination"],
        "decision": "permit",
        "collection": {"method": "partner-api"},
    }
    consent = service.call(key, "POST", "/v1/consents", body)
    revoked: dict[str, Any] = service.call(
        key, "POST", f"/v1/consents/{consent['id']}/revoke", {"reason": "withdrawn"}
    )
    return revoked


def enforcement(service: Service, consent_id: str) -> dict[str, Any]:
    found: dict[str, Any] = service.call(
        service.keys["practice"], "GET", f"/v1/consents/{consent_id}/enforcement"
    )
    return found


def subscribers(service: Service) -> dict[str, dict[str, Any]]:
    items = service.call(service.keys["practice"], "GET", "/v1/subscribers")["items"]
    return {item["name"]: item for item in items}


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    wait_until(check, timeout, what, ignoring=(ConsentViewUnavailable, sqlite3.OperationalError))


def revoke_client(service: Service, kit: Kit) -> None:
    service.cli("clients", "revoke", kit.subscriber_id)


def test_several_kits_acknowledge_and_a_stopped_one_catches_up(
    service: Service, tmp_path: Path
) -> None:
    kits = [new_kit(service, tmp_path, f"cabinet-{n}-{uuid.uuid4().hex[:4]}") for n in range(3)]
    first, second, third = kits
    try:
        with first.running(service), second.running(service), third.running(service):
            consent = grant_and_revoke(service)
            eventually(
                lambda: enforcement(service, consent["id"])["enforced_everywhere"],
                "all three kits acknowledged the revocation",
            )
            states = {s["name"]: s for s in enforcement(service, consent["id"])["subscribers"]}
            for kit in kits:
                assert states[kit.name]["applied_version"] == 2
                assert states[kit.name]["applied_at"] <= states[kit.name]["acknowledged_at"]

        # The third kit is down; the others go on.
        with first.running(service), second.running(service):
            later = grant_and_revoke(service)
            eventually(
                lambda: all(kit.applied_version(later["id"]) == 2 for kit in (first, second)),
                "the running kits applied the revocation",
            )
            eventually(
                lambda: subscribers(service)[second.name]["unacknowledged"] == 0,
                "the running kits acknowledged",
            )
            listed = subscribers(service)
            assert listed[third.name]["unacknowledged"] == 2
            assert listed[third.name]["oldest_unacknowledged_age_s"] >= 0
            assert enforcement(service, later["id"])["enforced_everywhere"] is False

            with third.running(service):
                eventually(
                    lambda: enforcement(service, later["id"])["enforced_everywhere"],
                    "the restarted kit caught up and acknowledged",
                )
            assert subscribers(service)[third.name]["unacknowledged"] == 0
    finally:
        for kit in kits:
            revoke_client(service, kit)


def test_a_kit_that_cannot_reach_the_service_keeps_applying_and_acks_later(
    service: Service, tmp_path: Path
) -> None:
    kit = new_kit(service, tmp_path, f"offline-{uuid.uuid4().hex[:4]}")
    second_port = free_port()
    unreachable = f"http://127.0.0.1:{second_port}"
    try:
        with kit.running(service, ack_url=unreachable):
            consent = grant_and_revoke(service)
            eventually(lambda: kit.applied_version(consent["id"]) == 2, "the kit applied")
            assert kit.pending_acks() >= 2
            assert enforcement(service, consent["id"])["enforced_everywhere"] is False
            # The service comes up where the kit was pointing: the queue drains.
            serve = [str(BIN / "consent-service"), "serve", "--bind", f"127.0.0.1:{second_port}"]
            with process(serve, service.env, service.workdir / "serve-2.log"):
                wait_for_port(second_port, timeout=60)
                eventually(
                    lambda: enforcement(service, consent["id"])["enforced_everywhere"],
                    "the kit acknowledged once the service answered",
                    timeout=90,
                )
                eventually(lambda: kit.pending_acks() == 0, "the kit emptied its queue")
    finally:
        revoke_client(service, kit)


def test_acks_kept_at_shutdown_are_sent_at_the_next_start(service: Service, tmp_path: Path) -> None:
    kit = new_kit(service, tmp_path, f"restart-{uuid.uuid4().hex[:4]}")
    unreachable = f"http://127.0.0.1:{free_port()}"
    try:
        with kit.running(service, ack_url=unreachable):
            consent = grant_and_revoke(service)
            eventually(lambda: kit.applied_version(consent["id"]) == 2, "the kit applied")
        assert kit.pending_acks() >= 2
        with kit.running(service):
            eventually(
                lambda: enforcement(service, consent["id"])["enforced_everywhere"],
                "the queued acks were sent after the restart",
            )
    finally:
        revoke_client(service, kit)


def test_cross_organization_acks_change_nothing(service: Service) -> None:
    _, outsider = service.client("events:read,events:ack", "outsider", org="org-elsewhere")
    consent = grant_and_revoke(service)
    ack = {
        "event_id": str(uuid.uuid4()),
        "consent_id": consent["id"],
        "version": 2,
        "applied_at": "2026-01-01T00:00:00Z",
    }

    answer = service.call(outsider, "POST", "/v1/subscribers/acks", {"acks": [ack]})

    assert answer == {"accepted": 0, "refused": 1}
    states = enforcement(service, consent["id"])["subscribers"]
    assert all(state["name"] != "outsider" for state in states)
