"""The whole path a consent change travels, with every piece real.

``consent-service serve`` (gunicorn, SQLite) and ``consent-service relay``
run as processes against a Tansu broker; subscribers are the kit's
``Subscriber`` or its ``consent-events listen`` command. Changes are made
through the REST API only, and the kit's answers are compared with the
service's own ``POST /v1/decisions``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from consent_events import (
    ConsentView,
    ConsentViewUnavailable,
    Feed,
    FeedError,
    StaleViewError,
    Subscriber,
)
from consent_events.store import DUPLICATE, Store
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from tests.support.broker import consume, free_port, running_broker, wait_for_port
from tests.support.waiting import holds_for, wait_until

pytestmark = pytest.mark.slow

ORG = "org-e2e"
TOPIC = "consent.events"
BIN = Path(sys.executable).parent
PRACTITIONER = "rpps:10003456789"
SCOPES = "consents:read,consents:write,decisions:read,events:read"


@dataclass
class Service:
    """The running service, seen through HTTP as a partner sees it."""

    base_url: str
    api_key: str
    bootstrap: str

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Content-Type": "application/json",
                **headers,
            },
            method=method,
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.load(response)

    def grant(self, patient: str, **overrides: Any) -> dict[str, Any]:
        body = {
            "patient_id": patient,
            "practitioner_id": PRACTITIONER,
            "categories": ["radiographs", "dental-chart"],
            "purposes": ["care-coordination"],
            "decision": "permit",
            "collection": {"method": "partner-api"},
            **overrides,
        }
        return dict(self.call("POST", "/v1/consents", body))

    def amend(self, consent: dict[str, Any], **changes: Any) -> dict[str, Any]:
        path = f"/v1/consents/{consent['id']}"
        return dict(self.call("PATCH", path, changes, **{"If-Match": f'"{consent["version"]}"'}))

    def revoke(self, consent_id: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/consents/{consent_id}/revoke", {"reason": "withdrawn"}))

    def decide(self, patient: str, category: str) -> tuple[str, str | None, int | None]:
        body = {
            "patient_id": patient,
            "practitioner_id": PRACTITIONER,
            "category": category,
            "purpose": "care-coordination",
        }
        answer = self.call("POST", "/v1/decisions", body)
        return answer["decision"], answer["consent_id"], answer["version"]

    def versions(self, consent_id: str) -> int:
        return int(self.call("GET", f"/v1/consents/{consent_id}")["version"])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("e2e")
    with running_broker() as broker:
        # As the kit's README asks of operators: the topic exists, with its retention, first.
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
            "CONSENT_SECRET_KEYS": "e2e-signing-key-0123456789abcdef",
        }
        cli = str(BIN / "consent-service")
        subprocess.run([cli, "db", "upgrade"], env=env, check=True, capture_output=True)
        created = subprocess.run(
            [cli, "clients", "create", "--org", ORG, "--json", "--scopes", SCOPES],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        api_key = json.loads(created.stdout)["api_key"]
        port, metrics_port = free_port(), free_port()
        with (
            _process([cli, "serve", "--bind", f"127.0.0.1:{port}"], env, workdir / "serve.log"),
            _process(
                [cli, "relay", "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port)],
                env,
                workdir / "relay.log",
            ),
        ):
            wait_for_port(port, timeout=60)
            yield Service(f"http://127.0.0.1:{port}", api_key, broker.bootstrap)


@contextmanager
def _process(command: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def _running(subscriber: Subscriber, feed: Feed | None = None) -> Iterator[None]:
    """The subscriber's loop in a thread, as an application embedding the kit runs it."""
    subscriber.start(feed)
    stop = threading.Event()
    thread = threading.Thread(target=subscriber.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        subscriber.close()


def _subscriber(service: Service, store: Store | str, **options: Any) -> Subscriber:
    return Subscriber(
        store,
        bootstrap_servers=service.bootstrap,
        group_id=f"e2e-{uuid.uuid4().hex[:8]}",
        topics=[TOPIC],
        manual_assignment=True,
        **options,
    )


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    wait_until(
        check, timeout, "the subscriber to reflect the change", 0.02, (ConsentViewUnavailable,)
    )


def _same_answer(view: ConsentView, service: Service, patient: str, category: str) -> bool:
    answer = view.is_permitted(patient, PRACTITIONER, category, "care-coordination")
    return (answer.decision, answer.consent_id, answer.version) == service.decide(patient, category)


def test_api_changes_are_enforced_with_the_services_answers(service: Service) -> None:
    patient = f"e2e-{uuid.uuid4().hex[:10]}"
    view = ConsentView(":memory:", organization=ORG)
    with _running(_subscriber(service, view.store, organization=ORG)):
        consent = service.grant(patient)
        _eventually(lambda: _ask(view, patient, "radiographs").permitted)
        assert _same_answer(view, service, patient, "radiographs")

        amended = service.amend(consent, categories=["dental-chart"])
        _eventually(lambda: not _ask(view, patient, "radiographs").permitted)
        for category in ("radiographs", "dental-chart", "billing"):
            assert _same_answer(view, service, patient, category)

        refusal = service.grant(patient, decision="deny", categories=["dental-chart"])
        _eventually(lambda: _ask(view, patient, "dental-chart").consent_id == refusal["id"])
        assert _same_answer(view, service, patient, "dental-chart")

        service.revoke(refusal["id"])
        _eventually(lambda: _ask(view, patient, "dental-chart").permitted)
        assert _ask(view, patient, "dental-chart").version == amended["version"]

        service.revoke(consent["id"])
        _eventually(lambda: _ask(view, patient, "dental-chart").reason == "no-consent")
        assert _same_answer(view, service, patient, "dental-chart")
    assert view.store.gaps() == [] and view.store.rejected() == []


def _ask(view: ConsentView, patient: str, category: str):
    return view.is_permitted(patient, PRACTITIONER, category, "care-coordination")


def test_resent_events_change_nothing(service: Service) -> None:
    patient = f"e2e-{uuid.uuid4().hex[:10]}"
    consent = service.grant(patient)
    service.revoke(consent["id"])
    store = Store()
    duplicates: list[str | None] = []
    subscriber = _subscriber(
        service,
        store,
        on_change=lambda c: duplicates.append(c.event_id) if c.outcome == DUPLICATE else None,
    )
    with _running(subscriber):
        _eventually(lambda: store.version_of(consent["id"]) == 2)
        before = store.counts()
        # Re-send this consent's records byte for byte, as the relay does after a lost ack.
        records = [
            r
            for r in consume(service.bootstrap, TOPIC, expected=2)
            if r.key == consent["id"].encode()  # type: ignore[attr-defined]
        ]
        assert len(records) == 2
        producer = KafkaProducer(bootstrap_servers=service.bootstrap, acks="all")
        for r in records:
            producer.send(TOPIC, key=r.key, value=r.value, headers=r.headers)  # type: ignore[attr-defined]
        producer.flush()
        producer.close()
        _eventually(lambda: len(duplicates) >= 2)
        assert store.counts() == before
        assert store.version_of(consent["id"]) == 2


def _listen(service: Service, store: Path, group: str, log: Path) -> subprocess.Popen[bytes]:
    command = [
        str(BIN / "consent-events"),
        "listen",
        "--bootstrap-servers",
        service.bootstrap,
        "--group",
        group,
        "--store",
        str(store),
        "--topic",
        TOPIC,
        "--assign",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


APPLIED = re.compile(r"applied consent=(\S+) version=(\d+)")


def test_a_killed_listener_resumes_without_missing_or_double_applying(
    service: Service, tmp_path: Path
) -> None:
    store_path = tmp_path / "view.db"
    group = f"e2e-kill-{uuid.uuid4().hex[:8]}"
    patients = [f"e2e-{uuid.uuid4().hex[:10]}" for _ in range(6)]
    consents = [service.grant(p) for p in patients[:3]]
    first = _listen(service, store_path, group, tmp_path / "first.log")
    try:
        _eventually(lambda: store_path.exists())
        store = Store(str(store_path))
        _eventually(lambda: all(store.version_of(c["id"]) == 1 for c in consents))
        # Changes keep coming while the listener is killed without warning.
        consents += [service.grant(p) for p in patients[3:]]
        service.revoke(consents[0]["id"])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The view as the killed listener left it: the ground truth of what it
    # applied, since the kill can land between a batch's commit and its log lines.
    left = {c["id"]: store.version_of(c["id"]) or 0 for c in consents}
    service.amend(consents[1], categories=["dental-chart"])
    service.revoke(consents[4]["id"])
    second = _listen(service, store_path, group, tmp_path / "second.log")
    try:
        expected = {c["id"]: service.versions(c["id"]) for c in consents}
        _eventually(lambda: {c: store.version_of(c) for c in expected} == expected)
        # A double apply would happen while the listener reads on through what
        # the first one left: wait until it reports reading every partition to
        # its end after this point, so that whatever it re-applied is logged.
        reached = time.time()
        wait_until(lambda: _current_since(store, reached), 20, "the listener to be current")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    first_applied = _applied(tmp_path / "first.log", expected)
    second_applied = _applied(tmp_path / "second.log", expected)
    assert set(first_applied) <= _versions(expected, lambda c: range(1, left[c] + 1))
    # The second listener resumes exactly where the view stood: what the first
    # applied is not applied again, and nothing after it is missed.
    assert set(second_applied) == _versions(expected, lambda c: range(left[c] + 1, expected[c] + 1))
    applied_counts = set(first_applied.values()) | set(second_applied.values())
    assert applied_counts <= {1}, "a version was applied twice"
    assert store.gaps() == [] and store.rejected() == []


def _applied(log: Path, consents: dict[str, int]) -> Counter[tuple[str, str]]:
    """How often the listener of ``log`` said it applied each version of ``consents``."""
    applied = Counter(APPLIED.findall(log.read_text()))
    return Counter({key: n for key, n in applied.items() if key[0] in consents})


def _versions(consents: dict[str, int], versions: Callable[[str], range]) -> set[tuple[str, str]]:
    return {(c, str(v)) for c in consents for v in versions(c)}


@pytest.mark.parametrize("start", ["topic", "feed"])
def test_a_new_subscriber_catches_up_from_scratch(service: Service, start: str) -> None:
    patient = f"e2e-{uuid.uuid4().hex[:10]}"
    consent = service.amend(service.grant(patient), purposes=["care-coordination", "referral"])
    other = service.grant(patient, categories=["billing"])
    service.revoke(other["id"])
    store = Store()
    feed = Feed(service.base_url, service.api_key, page_size=7) if start == "feed" else None
    with _running(_subscriber(service, store, organization=ORG), feed):
        _eventually(lambda: store.version_of(other["id"]) == 2)
        assert store.version_of(consent["id"]) == 2
        # Every consent the service holds for this organization, at its current version.
        items, _ = Feed(service.base_url, service.api_key, page_size=1000).page(0)
        latest: dict[str, int] = {}
        for item in items:
            latest[item["subject"]] = max(latest.get(item["subject"], 0), item["data"]["version"])
        _eventually(lambda: all(store.version_of(c) == v for c, v in latest.items()))
    assert store.gaps() == [] and store.rejected() == []


# The view's lag bound in the fail-closed tests: many heartbeat intervals
# (0.2 s), so that a loaded machine delaying a few heartbeats does not make an
# idle but live subscriber look stale; the test idles for longer than it.
IDLE_BOUND_S = 3.0


def test_the_view_fails_closed_when_its_subscriber_stops(service: Service) -> None:
    patient = f"e2e-{uuid.uuid4().hex[:10]}"
    service.grant(patient)
    view = ConsentView(":memory:", max_lag_seconds=IDLE_BOUND_S)
    with _running(_subscriber(service, view.store, heartbeat_interval=0.2)):
        _eventually(lambda: _ask(view, patient, "radiographs").permitted)
        # Idle but alive for longer than max_lag_seconds: still fresh all along.
        assert holds_for(lambda: _ask(view, patient, "radiographs").permitted, IDLE_BOUND_S + 0.5)
    wait_until(lambda: _refuses_as_stale(view, patient), 10, "the view to refuse once stopped")
    with pytest.raises(StaleViewError):
        _ask(view, patient, "radiographs")


def _refuses_as_stale(view: ConsentView, patient: str) -> bool:
    try:
        _ask(view, patient, "radiographs")
    except StaleViewError:
        return True
    return False


def _current_since(store: Store, instant: float) -> bool:
    """The listener has seen the end of every partition, with nothing left, since ``instant``."""
    state = store.state()
    return state.lag_events == 0 and (state.current_as_of or 0) >= instant


def test_catch_up_with_a_bad_key_fails_clearly(service: Service) -> None:
    """A wrong key must stop the catch-up, not leave a silently empty view."""
    with pytest.raises(FeedError, match="401"):
        Feed(service.base_url, "not-a-key").catch_up(Store())
