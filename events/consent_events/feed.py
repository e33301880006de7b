"""Catching a fresh store up from the service's ``GET /v1/events`` feed.

Used when the Kafka topic no longer holds every event since the first one
(retention), so that replaying the topic from its start would leave gaps.
The feed serves the caller's organization's events in commit-safe order with
strictly increasing ``position``s; the store remembers the last position
applied so that an interrupted catch-up resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from consent_events.envelope import Event, InvalidEvent, from_structured
from consent_events.store import Change, Rejection, Store

logger = logging.getLogger(__name__)


class FeedError(RuntimeError):
    """The service's event feed answered something other than a page of events."""


class Feed:
    """A reader of ``GET {base_url}/v1/events`` with an API key holding ``events:read``."""

    def __init__(self, base_url: str, api_key: str, *, page_size: int = 500, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.page_size = page_size
        self.timeout = timeout

    def page(self, after: int) -> tuple[list[dict[str, Any]], int]:
        """One page of events after ``after``, and the position to ask after next."""
        query = urllib.parse.urlencode({"after": after, "limit": self.page_size})
        request = urllib.request.Request(  # noqa: S310 -- the operator configures an http(s) URL
            f"{self.base_url}/v1/events?{query}",
            headers={"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise FeedError(f"GET /v1/events answered {error.code}") from None
        except (urllib.error.URLError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise FeedError(f"GET /v1/events failed: {error}") from None
        items = body.get("items") if isinstance(body, dict) else None
        next_after = body.get("next_after") if isinstance(body, dict) else None
        if not isinstance(items, list) or not isinstance(next_after, int):
            raise FeedError("GET /v1/events did not answer {items, next_after}")
        return items, next_after

    def catch_up(self, store: Store, *, on_change: Callable[[Change], None] | None = None) -> int:
        """Apply every event the feed holds after the store's last position; return how many.

        Each page is applied in one durable transaction together with its
        ``next_after``, so nothing is applied twice across restarts.
        """
        after = store.state().feed_after or 0
        read = 0
        while True:
            asked_at = time.time()
            items, next_after = self.page(after)
            if not items:
                # Everything committed before this request is now applied.
                store.heartbeat(lag_events=0, current_as_of=asked_at)
                return read
            batch: list[Event | Rejection] = []
            for item in items:
                position = item.get("position") if isinstance(item, dict) else None
                if not isinstance(position, int) or position <= after:
                    raise FeedError("GET /v1/events returned positions out of order")
                after = position
                try:
                    batch.append(from_structured(item))
                except InvalidEvent as error:
                    batch.append(Rejection(error, f"feed@{position}"))
            if next_after < after:
                raise FeedError("GET /v1/events returned next_after before its last item")
            for change in store.apply(batch, feed_after=next_after, lag_events=0):
                if on_change is not None:
                    on_change(change)
            after = next_after
            read += len(items)
