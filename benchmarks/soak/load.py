"""The soak's mixed load: what a partner and patients do, spread over the API instances.

Each worker thread picks an operation by weight, a random instance, and
records ``(seconds since start, operation, status, latency)``; status 0 is a
connection failure (refused, reset, timed out). Writes keep a pool of the
consents they made, and a consent is checked out by one thread at a time, so
amendments carry the right ``If-Match`` and never race each other.
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

PRACTITIONERS = tuple(f"rpps:1000000{n:04d}" for n in range(8))
CATEGORIES = ("radiographs", "dental-chart", "prescriptions")
PURPOSES = ("care-coordination",)

# Weights of the mix: mostly decisions, as in production, and every write path.
MIX = (
    ("grant", 14),
    ("amend", 8),
    ("revoke", 4),
    ("decide", 40),
    ("decide_batch", 8),
    ("consent_request", 4),
    ("events", 10),
)


@dataclass(frozen=True)
class Sample:
    at_s: float
    op: str
    status: int
    latency_s: float


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Connections:
    """One keep-alive connection per instance, for one thread; reconnects after a failure.

    A server closes an idle keep-alive connection after its timeout (the
    service's gunicorn ``keepalive``, 5 s); a request sent on it just then
    fails before any answer. So a connection idle for ``REUSE_IDLE_S`` is not
    reused, as browsers and pooling clients do, and a GET that still fails on
    a reused connection is sent once more on a fresh one; other methods count
    as failed (the server may have acted on them).
    """

    REUSE_IDLE_S = 2.0

    def __init__(self, base_urls: Sequence[str], timeout: float) -> None:
        self._targets = [urllib.parse.urlsplit(url) for url in base_urls]
        self._open: dict[int, http.client.HTTPConnection] = {}
        self._last_used: dict[int, float] = {}
        self._timeout = timeout

    def request(
        self, index: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Answer:
        if time.monotonic() - self._last_used.get(index, 0.0) > self.REUSE_IDLE_S:
            self._drop(index)
        reused = index in self._open
        answer = self._send(index, method, path, body, headers)
        if answer.status == 0 and reused and method == "GET":
            answer = self._send(index, method, path, body, headers)
        return answer

    def _send(
        self, index: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Answer:
        target = self._targets[index]
        connection = self._open.get(index)
        if connection is None:
            connection = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=self._timeout
            )
            self._open[index] = connection
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self._last_used[index] = time.monotonic()
            if response.getheader("Connection", "").lower() == "close":
                self._drop(index)
            return Answer(
                response.status, payload, {k.lower(): v for k, v in response.getheaders()}
            )
        except (OSError, http.client.HTTPException):
            self._drop(index)
            return Answer(0)

    def _drop(self, index: int) -> None:
        connection = self._open.pop(index, None)
        if connection is not None:
            connection.close()


class Load:
    """Drives the mix at ``rate`` requests/s (0: as fast as ``threads`` allow)."""

    def __init__(
        self, base_urls: Sequence[str], api_key: str, *, threads: int, run_id: str
    ) -> None:
        self.base_urls = list(base_urls)
        self.api_key = api_key
        self.threads = threads
        self.run_id = run_id
        self.samples: list[Sample] = []
        self.rate = 0.0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._pool: list[dict[str, Any]] = []
        self._patients: list[str] = []
        self._counter = itertools.count()
        self._stop = threading.Event()
        self._next_slot = 0.0
        self._workers: list[threading.Thread] = []
        self._ops: dict[str, Callable[[Connections, int], int]] = {
            "grant": self._grant,
            "amend": self._amend,
            "revoke": self._revoke,
            "decide": self._decide,
            "decide_batch": self._decide_batch,
            "consent_request": self._consent_request,
            "events": self._events,
        }

    def start(self, rate: float) -> None:
        self.rate = rate
        self._stop.clear()
        self._next_slot = time.monotonic()
        self._workers = [
            threading.Thread(target=self._work, args=(n,), name=f"load-{n}", daemon=True)
            for n in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _pace(self) -> None:
        """Open-loop pacing: each request takes the next slot of a fixed schedule."""
        if self.rate <= 0:
            return
        with self._lock:
            slot = max(self._next_slot, time.monotonic() - 1.0)
            self._next_slot = slot + 1.0 / self.rate
        delay = slot - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def _work(self, number: int) -> None:
        rng = random.Random(number)
        names = [name for name, _ in MIX]
        weights = [weight for _, weight in MIX]
        connections = Connections(self.base_urls, timeout=30)
        while not self._stop.is_set():
            self._pace()
            if self._stop.is_set():
                return
            op = rng.choices(names, weights)[0]
            instance = rng.randrange(len(self.base_urls))
            began = time.monotonic()
            status = self._ops[op](connections, instance)
            ended = time.monotonic()
            with self._lock:
                self.samples.append(Sample(began - self.started, op, status, ended - began))

    # The operations: each returns the HTTP status it ended with (0: no answer).

    def _call(
        self,
        connections: Connections,
        instance: int,
        method: str,
        path: str,
        body: Any = None,
        **extra: str,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {self.api_key}", **extra}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return connections.request(instance, method, path, data, headers)

    def _grant(self, connections: Connections, instance: int) -> int:
        patient = f"soak-{self.run_id}-{next(self._counter)}"
        body = {
            "patient_id": patient,
            "practitioner_id": random.choice(PRACTITIONERS),
            "categories": random.sample(CATEGORIES, 2),
            "purposes": list(PURPOSES),
            "decision": "permit",
            "collection": {"method": "partner-api"},
        }
        answer = self._call(connections, instance, "POST", "/v1/consents", body)
        if answer.status == 201:
            created = json.loads(answer.body)
            with self._lock:
                self._pool.append({"id": created["id"], "version": created["version"]})
                self._patients.append(patient)
        return answer.status

    def _checkout(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._pool:
                return None
            return self._pool.pop(random.randrange(len(self._pool)))

    def _amend(self, connections: Connections, instance: int) -> int:
        consent = self._checkout()
        if consent is None:
            return self._grant(connections, instance)
        body = {"categories": random.sample(CATEGORIES, random.randint(1, 3))}
        path = f"/v1/consents/{consent['id']}"
        answer = self._call(
            connections, instance, "PATCH", path, body, **{"If-Match": f'"{consent["version"]}"'}
        )
        if answer.status == 200:
            consent["version"] = json.loads(answer.body)["version"]
        if answer.status in (200, 412):
            # 412 would mean our bookkeeping is wrong: keep the consent, the report shows the 4xx.
            with self._lock:
                self._pool.append(consent)
        return answer.status

    def _revoke(self, connections: Connections, instance: int) -> int:
        consent = self._checkout()
        if consent is None:
            return self._grant(connections, instance)
        path = f"/v1/consents/{consent['id']}/revoke"
        return self._call(connections, instance, "POST", path, {"reason": "soak"}).status

    def _question(self) -> dict[str, str]:
        with self._lock:
            patient = random.choice(self._patients) if self._patients else "soak-nobody"
        return {
            "patient_id": patient,
            "practitioner_id": random.choice(PRACTITIONERS),
            "category": random.choice(CATEGORIES),
            "purpose": PURPOSES[0],
        }

    def _decide(self, connections: Connections, instance: int) -> int:
        return self._call(connections, instance, "POST", "/v1/decisions", self._question()).status

    def _decide_batch(self, connections: Connections, instance: int) -> int:
        checks = [self._question() for _ in range(20)]
        return self._call(
            connections, instance, "POST", "/v1/decisions:batch", {"checks": checks}
        ).status

    def _events(self, connections: Connections, instance: int) -> int:
        after = random.randint(0, max(0, len(self._patients)))
        return self._call(
            connections, instance, "GET", f"/v1/events?after={after}&limit=100"
        ).status

    def _consent_request(self, connections: Connections, instance: int) -> int:
        """Ask through the API, then answer as the patient: open the form, post ``grant``."""
        body = {
            "patient_id": f"soak-{self.run_id}-form-{next(self._counter)}",
            "practitioner_id": random.choice(PRACTITIONERS),
            "practitioner_name": "Dr Camille Martin",
            "practitioner_profession": "Orthodontiste",
            "organization_name": "Cabinet du Parc",
            "categories": list(CATEGORIES[:2]),
            "purposes": list(PURPOSES),
            "valid_for_days": 365,
        }
        asked = self._call(connections, instance, "POST", "/v1/consent-requests", body)
        if asked.status != 201:
            return asked.status
        link = urllib.parse.urlsplit(json.loads(asked.body)["form_url"])
        # The patient's browser: its own connection and cookie (the CSRF double submit).
        browser = Connections(self.base_urls, timeout=30)
        form_page = browser.request(instance, "GET", f"{link.path}?{link.query}", None, {})
        if form_page.status != 200:
            return form_page.status
        cookie = form_page.headers.get("set-cookie", "").split(";", 1)[0]
        form = _first_form(form_page.body.decode())
        fields = {**form["fields"], "answer": "grant"}
        posted = browser.request(
            instance,
            "POST",
            form["action"],
            urllib.parse.urlencode(fields).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie},
        )
        return posted.status


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({"action": values.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and "name" in values:
            self.forms[-1]["fields"][values["name"]] = values.get("value", "")


def _first_form(html: str) -> dict[str, Any]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms[0] if parser.forms else {"action": "/", "fields": {}}
