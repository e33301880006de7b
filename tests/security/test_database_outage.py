"""PostgreSQL goes away mid-run: 503 problem+json quickly, /readyz false, nothing half-written,
and everything resumes when it is back.

The app reaches PostgreSQL through a TCP proxy that this test cuts, black-holes
and restores; the shared test server itself is never stopped.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from consent_service import audit, create_app
from consent_service.audit import trail as audit_trail
from consent_service.audit import writer as audit_writer
from consent_service.config import Settings
from consent_service.db.audit_models import AuditEntry
from consent_service.db.models import Consent, ConsentVersion, OutboxEvent
from consent_service.db.session import Database
from tests.conftest import TEST_SECRET_KEYS, KeyFactory, consent_body
from tests.support.waiting import wait_until
from tests.web.conftest import forms, local, request_body

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


class Proxy:
    """A loopback TCP proxy that can forward, refuse (down) or swallow (black hole)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "forward"
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as a crashed server would."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone does not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            if self.mode == "blackhole":
                continue  # accepted, never answered: a hung server
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied(database: Database, backend: str) -> Iterator[tuple[Proxy, Database]]:
    if backend != "postgresql":
        pytest.skip("the outage test cuts a PostgreSQL connection")
    url = make_url(database.url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    through = Database(url.set(port=proxy.port).render_as_string(hide_password=False))
    yield proxy, through
    # The last requests' audit entries may still wait in the batch writer (in
    # its retry pause if the outage failed an append): they are appended
    # through a working proxy before it goes, or they would be retried for the
    # rest of the session and every later flush would time out.
    proxy.stop()
    proxy.mode = "forward"
    proxy.start()
    appended = audit_writer.flush(timeout=30)
    audit_trail.release(through)
    proxy.stop()
    through.dispose()
    assert appended, "audit entries of the test were not appended"


def _client(through: Database) -> FlaskClient:
    settings = Settings(database_url=through.url, secret_keys=TEST_SECRET_KEYS, rate_limits="off")
    return create_app(settings, database=through).test_client()


def _consistent(database: Database) -> tuple[int, int]:
    """Every consent has all its versions, one event each, one audit entry each."""
    assert audit_writer.flush(timeout=20), "queued audit entries were not appended"
    with database.reading() as session:
        consents = session.scalar(select(func.count()).select_from(Consent)) or 0
        expected = session.scalar(select(func.coalesce(func.sum(Consent.version), 0)))
        versions = session.scalar(select(func.count()).select_from(ConsentVersion))
        events = session.scalar(select(func.count()).select_from(OutboxEvent))
        audited = session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action.like("consent.%ed"))
        )
        report = audit.verify(session)
    assert versions == expected == events == audited
    assert report.ok, report.problems
    return consents, versions


def test_outage_answers_503_quickly_writes_nothing_half_and_recovers(
    proxied: tuple[Proxy, Database], api_key: KeyFactory, database: Database
) -> None:
    proxy, through = proxied
    client = _client(through)
    headers = api_key()
    assert client.get("/readyz").status_code == 200

    created: Counter[int] = Counter()
    stop = threading.Event()

    def write_until_stopped() -> None:
        local = _client(through)
        while not stop.is_set():
            created[
                local.post("/v1/consents", json=consent_body(), headers=headers).status_code
            ] += 1

    with ThreadPoolExecutor(max_workers=3) as pool:
        for _ in range(3):
            pool.submit(write_until_stopped)
        try:
            wait_until(lambda: created[201] >= 3, 30, "writes to go through")
            proxy.stop()  # PostgreSQL "crashes" mid-run, in the middle of transactions
            wait_until(lambda: created[503] >= 3, 30, "writes to meet the outage")
        finally:
            stop.set()
    assert created[201] > 0 and set(created) <= {201, 503}, created

    started = time.monotonic()
    down = [
        client.post("/v1/consents", json=consent_body(), headers=headers),
        client.get("/v1/consents", headers=headers),
        client.post(
            "/v1/decisions",
            json={
                "patient_id": "p",
                "practitioner_id": "rpps:1",
                "category": "billing",
                "purpose": "referral",
            },
            headers=headers,
        ),
    ]
    assert time.monotonic() - started < 5
    for response in down:
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.headers["Retry-After"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"

    proxy.mode = "forward"
    proxy.start()  # back on the same port
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)
    assert client.post("/v1/consents", json=consent_body(), headers=headers).status_code == 201
    consents, _ = _consistent(database)
    assert consents >= created[201] + 1


def test_a_hung_database_is_a_503_within_the_connect_timeout(
    proxied: tuple[Proxy, Database], api_key: KeyFactory
) -> None:
    proxy, through = proxied
    headers = api_key()
    proxy.mode = "blackhole"
    proxy.stop()  # cut the open connections; new ones are accepted and never answered
    proxy.start()
    through.engine.dispose()
    client = _client(through)
    started = time.monotonic()
    response = client.get("/v1/consents", headers=headers)
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 12, f"took {elapsed:.1f} s"


def test_the_web_form_is_a_503_page_during_an_outage_never_a_500(
    proxied: tuple[Proxy, Database], api_key: KeyFactory
) -> None:
    """Found by the soak: the form's catch-all turned a lost database into a 500 page."""
    proxy, through = proxied
    client = _client(through)
    asked = client.post("/v1/consent-requests", json=request_body(), headers=api_key())
    assert asked.status_code == 201, asked.get_json()
    page = client.get(local(asked.get_json()["form_url"]))
    assert page.status_code == 200
    (form,) = forms(page.get_data(as_text=True))

    proxy.stop()
    answers = [
        client.post(form.action, data=form.submission(answer="grant")),
        client.get(local(asked.get_json()["form_url"])),
    ]
    for answer in answers:
        assert answer.status_code == 503, answer.get_data(as_text=True)[:500]
        assert answer.mimetype == "text/html"
        assert answer.headers["Retry-After"]

    proxy.mode = "forward"
    proxy.start()
    deadline = time.monotonic() + 20
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)
    granted = client.post(form.action, data=form.submission(answer="grant"))
    assert granted.status_code == 200, granted.get_data(as_text=True)[:500]
