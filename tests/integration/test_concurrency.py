"""Concurrent writers through the API, on SQLite and PostgreSQL.

On PostgreSQL a barrier placed after the version check makes both writers
pass the read-side check before either writes, so the test proves that the
database's compare-and-set, not a read-then-write, picks the one winner.
SQLite writers queue on ``BEGIN IMMEDIATE``, so there the barrier would only
deadlock and is left out.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from consent_service.db.session import Database
from consent_service.http import writes
from consent_service.services import consents as consent_service
from tests.conftest import consent_body
from tests.integration.api_support import create_consent, row_counts

BARRIER_TIMEOUT_S = 10


def run_together(count: int, call: Callable[[int], TestResponse]) -> list[TestResponse]:
    """Run ``call(i)`` in ``count`` threads released at the same moment; re-raise failures."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        start.wait(BARRIER_TIMEOUT_S)
        try:
            results[index] = call(index)
        except BaseException as error:  # noqa: BLE001  (re-raised in the main thread below)
            results[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a writer hung"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def hold_after_version_check(
    monkeypatch: pytest.MonkeyPatch, database: Database, parties: int
) -> None:
    """On PostgreSQL, let ``parties`` writers all pass the version check before any writes."""
    if database.is_sqlite:
        return
    barrier = threading.Barrier(parties)
    original = consent_service._expect_version

    def check_then_wait(consent: Any, expected: int) -> None:
        original(consent, expected)
        barrier.wait(BARRIER_TIMEOUT_S)

    monkeypatch.setattr(consent_service, "_expect_version", check_then_wait)


def _patch(
    app: Flask, auth: dict[str, str], consent_id: str, version: int, body: dict[str, Any]
) -> TestResponse:
    response: TestResponse = app.test_client().patch(
        f"/v1/consents/{consent_id}", json=body, headers={**auth, "If-Match": f'"{version}"'}
    )
    return response


def test_two_amendments_of_one_version_one_wins_one_412(
    app: Flask, auth: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent = create_consent(app.test_client(), auth)
    hold_after_version_check(monkeypatch, database, 2)
    bodies: list[dict[str, Any]] = [{"decision": "deny"}, {"categories": ["billing"]}]

    responses = run_together(2, lambda i: _patch(app, auth, consent["id"], 1, bodies[i]))

    assert sorted(r.status_code for r in responses) == [200, 412]
    winner = next(r for r in responses if r.status_code == 200).get_json()
    loser = next(r for r in responses if r.status_code == 412)
    assert loser.mimetype == "application/problem+json"
    versions = app.test_client().get(f"/v1/consents/{consent['id']}/versions", headers=auth)
    history = versions.get_json()
    assert [v["version"] for v in history] == [1, 2]
    assert history[1] == winner
    counts = row_counts(database)
    assert counts["consent_versions"] == 2 and counts["outbox_events"] == 2


@pytest.mark.parametrize("threads", [6])
def test_many_writers_exactly_one_winner_per_version(
    app: Flask, auth: dict[str, str], database: Database, threads: int
) -> None:
    consent = create_consent(app.test_client(), auth)
    rounds = 4
    for round_number in range(1, rounds + 1):
        responses = run_together(
            threads,
            lambda i, v=round_number: _patch(  # type: ignore[misc]
                app, auth, consent["id"], v, {"purposes": ["referral"], "reason": f"writer {i}"}
            ),
        )
        assert Counter(r.status_code for r in responses) == {200: 1, 412: threads - 1}
    history = app.test_client().get(f"/v1/consents/{consent['id']}/versions", headers=auth)
    assert [v["version"] for v in history.get_json()] == list(range(1, rounds + 2))
    events = app.test_client().get("/v1/events", headers=auth).get_json()["items"]
    assert [e["data"]["version"] for e in events] == list(range(1, rounds + 2))


def test_revoke_racing_an_amendment(
    app: Flask, auth: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    consent = create_consent(app.test_client(), auth)
    hold_after_version_check(monkeypatch, database, 2)

    def call(index: int) -> TestResponse:
        client = app.test_client()
        headers = {**auth, "If-Match": '"1"'}
        if index == 0:
            return client.post(f"/v1/consents/{consent['id']}/revoke", json={}, headers=headers)
        return client.patch(
            f"/v1/consents/{consent['id']}", json={"decision": "deny"}, headers=headers
        )

    responses = run_together(2, call)
    assert sorted(r.status_code for r in responses) == [200, 412]
    history = app.test_client().get(f"/v1/consents/{consent['id']}/versions", headers=auth)
    assert [v["version"] for v in history.get_json()] == [1, 2]


def test_same_idempotency_key_at_once_records_one_consent(
    app: Flask, auth: dict[str, str], database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database.is_sqlite:
        # Both requests look for a stored answer, find none, and only then go on.
        barrier = threading.Barrier(2)
        calls = Counter[str]()
        lock = threading.Lock()
        original = writes.find_answer

        def find_then_wait(session: Any, *, client_id: str, key: str) -> Any:
            found = original(session, client_id=client_id, key=key)
            with lock:
                calls["n"] += 1
                first_two = calls["n"] <= 2
            if first_two:
                barrier.wait(BARRIER_TIMEOUT_S)
            return found

        monkeypatch.setattr(writes, "find_answer", find_then_wait)
    body = consent_body()
    headers = {**auth, "Idempotency-Key": "twice-at-once"}

    responses = run_together(
        2, lambda _: app.test_client().post("/v1/consents", json=body, headers=headers)
    )

    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].get_json() == responses[1].get_json()
    replayed = [r.headers.get("Idempotent-Replayed") for r in responses]
    assert sorted(str(value) for value in replayed) == ["None", "true"]
    counts = row_counts(database)
    assert counts["consents"] == 1
    assert counts["consent_versions"] == 1
    assert counts["outbox_events"] == 1
    assert counts["idempotency_records"] == 1
