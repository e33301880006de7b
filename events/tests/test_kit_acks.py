"""Acknowledgements: queued with the applied change, sent in batches, kept until answered.

The service side is a real HTTP server on loopback that answers as told, so
that retries, refusals and an unreachable service are exercised for real.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kit_helpers import event, free_port, new_id, snapshot

from consent_events.acks import MAX_BATCH, AckSender, forget, pending, queue_current_versions
from consent_events.cli import main
from consent_events.store import Store


class FakeService:
    """Records each POSTed batch; answers with the next status in ``statuses`` (then 202)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()


@contextmanager
def serving(service: FakeService, port: int = 0) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with service.lock:
                service.batches.append(body)
                service.headers.append(dict(self.headers))
                status = service.statuses.pop(0) if service.statuses else 202
            answer = json.dumps({"accepted": len(body["acks"]), "refused": 0}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.01)


def granted_and_revoked(store: Store) -> str:
    consent_id = new_id()
    store.apply(
        [
            event(snapshot(consent_id, 1)),
            event(snapshot(consent_id, 2, change="revoked")),
        ]
    )
    return consent_id


def acked(service: FakeService) -> list[tuple[str, int]]:
    return [(a["consent_id"], a["version"]) for batch in service.batches for a in batch["acks"]]


def test_applied_changes_are_queued_in_the_same_transaction(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "view.db"), queue_acks=True)
    consent_id = new_id()
    first = event(snapshot(consent_id, 1))
    store.apply([first, first, event(snapshot(consent_id, 3))])

    # The duplicate and the held version 3 were not applied: nothing to acknowledge.
    assert [(a.consent_id, a.version, a.event_id) for a in pending(store)] == [
        (consent_id, 1, first.event_id)
    ]
    store.close()
    reopened = Store(str(tmp_path / "view.db"))
    assert len(pending(reopened)) == 1


def test_a_store_without_acks_queues_nothing() -> None:
    store = Store()
    granted_and_revoked(store)
    assert pending(store) == []


def test_acks_are_sent_with_the_key_and_forgotten_once_answered() -> None:
    store = Store(queue_acks=True)
    service = FakeService()
    consent_id = granted_and_revoked(store)
    with serving(service) as url:
        sender = AckSender(store, url, "csk_key")
        assert sender.send_once() == 2
    assert sorted(acked(service)) == [(consent_id, 1), (consent_id, 2)]
    assert service.headers[0]["Authorization"] == "Bearer csk_key"
    ack = service.batches[0]["acks"][0]
    assert set(ack) == {"event_id", "consent_id", "version", "applied_at"}
    assert ack["applied_at"].endswith("Z")
    assert pending(store) == []


def test_batches_hold_at_most_500_acks() -> None:
    store = Store(queue_acks=True)
    store.apply([event(snapshot(new_id(), 1)) for _ in range(MAX_BATCH + 20)])
    service = FakeService()
    with serving(service) as url:
        sender = AckSender(store, url, "k")
        assert sender.send_once() == MAX_BATCH
        assert sender.send_once() == 20
    assert [len(b["acks"]) for b in service.batches] == [MAX_BATCH, 20]


@pytest.mark.parametrize("status", [500, 503, 401, 429])
def test_a_transient_failure_keeps_the_acks_for_a_retry(status: int) -> None:
    store = Store(queue_acks=True)
    granted_and_revoked(store)
    service = FakeService()
    service.statuses = [status]
    with serving(service) as url:
        sender = AckSender(store, url, "k")
        with pytest.raises(OSError, match=str(status)):
            sender.send_once()
        assert len(pending(store)) == 2
        assert sender.send_once() == 2
    assert pending(store) == []


def test_a_batch_refused_for_good_is_dropped_not_retried_forever() -> None:
    store = Store(queue_acks=True)
    granted_and_revoked(store)
    service = FakeService()
    service.statuses = [422]
    with serving(service) as url:
        assert AckSender(store, url, "k").send_once() == 2
    assert pending(store) == []


def test_the_sender_thread_retries_until_the_service_comes_up() -> None:
    store = Store(queue_acks=True)
    consent_id = granted_and_revoked(store)
    port = free_port()
    sender = AckSender(store, f"http://127.0.0.1:{port}", "k", min_backoff=0.05, max_backoff=0.2)
    sender.start()
    try:
        # Nothing listens yet: applying goes on and the queue grows.
        later = granted_and_revoked(store)
        assert len(pending(store)) == 4
        service = FakeService()
        with serving(service, port):
            eventually(lambda: pending(store) == [])
    finally:
        sender.stop()
    assert sorted(acked(service)) == sorted(
        [(consent_id, 1), (consent_id, 2), (later, 1), (later, 2)]
    )


def test_the_sender_wakes_when_notified() -> None:
    store = Store(queue_acks=True)
    service = FakeService()
    with serving(service) as url:
        sender = AckSender(store, url, "k", idle_wait=60)
        sender.start()
        try:
            consent_id = granted_and_revoked(store)
            sender.notify()
            eventually(lambda: len(acked(service)) == 2, timeout=5)
        finally:
            sender.stop()
    assert sorted(acked(service)) == [(consent_id, 1), (consent_id, 2)]


def test_changes_applied_before_acking_was_on_are_queued_once() -> None:
    store = Store()
    consent_id = granted_and_revoked(store)
    store.queue_acks = True

    assert queue_current_versions(store, time.time()) == 1
    assert [(a.consent_id, a.version) for a in pending(store)] == [(consent_id, 2)]
    forget(store, pending(store))
    assert queue_current_versions(store, time.time()) == 0
    assert pending(store) == []


def test_listen_with_ack_url_needs_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CONSENT_EVENTS_ACK_KEY", raising=False)
    command = [
        "listen",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--group",
        "g",
        "--store",
        str(tmp_path / "view.db"),
        "--ack-url",
        "http://127.0.0.1:1",
    ]
    with pytest.raises(SystemExit) as exited:
        main(command)
    assert exited.value.code == 2
    assert "--ack-url needs --ack-key or CONSENT_EVENTS_ACK_KEY" in capsys.readouterr().err
