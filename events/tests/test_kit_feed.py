"""Catching up from GET /v1/events, then following Kafka without loss or double apply."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kit_helpers import applied, drain, new_id, snapshot, structured

from consent_events import Feed, FeedError, Store, Subscriber
from consent_events.store import APPLIED, DUPLICATE

API_KEY = "test-key"


class FakeService:
    """A real HTTP server that serves ``GET /v1/events`` from a list, like the service does."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[int] = []
        self.fail_after: int | None = None
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                after, limit = int(query["after"][0]), int(query["limit"][0])
                service.requests.append(after)
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._answer(401, {"title": "Unauthorized"})
                if service.fail_after is not None and after >= service.fail_after:
                    return self._answer(503, {"title": "Unavailable"})
                items = [e for e in service.events if e["position"] > after][:limit]
                next_after = items[-1]["position"] if items else after
                return self._answer(200, {"items": items, "next_after": next_after})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is for failures."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, data: dict[str, Any], event_id: str | None = None) -> str:
        document = structured(data, event_id, position=10 * (len(self.events) + 1))
        self.events.append(document)
        return str(document["id"])


@pytest.fixture
def service() -> Iterator[FakeService]:
    service = FakeService()
    thread = threading.Thread(target=service.server.serve_forever, daemon=True)
    thread.start()
    yield service
    service.server.shutdown()
    service.server.server_close()


def test_bootstrap_then_follow_kafka_without_loss_or_double_apply(
    broker, topic, publish, service
) -> None:
    first, second = new_id(), new_id()
    # Published before the subscriber starts, and also in the feed.
    for data in (snapshot(first, 1), snapshot(first, 2, categories=["billing"])):
        publish(data, service.add(data))
    # Committed by the service but published to Kafka only after the feed was read.
    late = snapshot(second, 1)
    late_id = service.add(late)
    store = Store()
    subscriber = Subscriber(
        store,
        bootstrap_servers=broker,
        group_id="g-feed",
        topics=[topic],
        manual_assignment=True,
    )
    subscriber.start(Feed(service.url, API_KEY, page_size=2))
    assert (store.version_of(first), store.version_of(second)) == (2, 1)
    assert store.state().feed_after == 30
    publish(late, late_id)
    publish(snapshot(first, 3, change="revoked", categories=["billing"]))
    try:
        changes = drain(subscriber, lambda c: len(c) == 2)
    finally:
        subscriber.close()
    # Two consents, two partitions: the two may arrive in either order.
    assert sorted(c.outcome for c in changes) == [APPLIED, DUPLICATE]
    assert applied(changes) == [(first, 3)]
    assert store.counts()["consent_versions"] == 4

    # The group now has offsets: a restart follows Kafka and leaves the feed alone.
    asked = len(service.requests)
    again = Subscriber(
        store, bootstrap_servers=broker, group_id="g-feed", topics=[topic], manual_assignment=True
    )
    again.start(Feed(service.url, API_KEY))
    again.close()
    assert len(service.requests) == asked


def test_an_interrupted_catch_up_resumes_where_it_stopped(service) -> None:
    ids = [service.add(snapshot(new_id())) for _ in range(5)]
    service.fail_after = 20
    store = Store()
    feed = Feed(service.url, API_KEY, page_size=2)
    with pytest.raises(FeedError, match="503"):
        feed.catch_up(store)
    assert store.state().feed_after == 20
    assert store.state().current_as_of is None
    service.fail_after = None
    assert feed.catch_up(store) == 3
    assert service.requests[-3:] == [20, 40, 50]
    assert store.counts()["consents"] == len(ids)
    assert store.state().current_as_of is not None


def test_a_bad_key_is_a_clear_error(service) -> None:
    with pytest.raises(FeedError, match="401"):
        Feed(service.url, "wrong").catch_up(Store())


def test_positions_out_of_order_stop_the_catch_up(service) -> None:
    service.add(snapshot(new_id()))
    service.add(snapshot(new_id()))
    service.events[1]["position"] = 5
    service.events.sort(key=lambda e: -e["position"])
    with pytest.raises(FeedError, match="out of order"):
        Feed(service.url, API_KEY).catch_up(Store())
