"""Rate limits per client and per route: 429, Retry-After, problem+json; shared by workers."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.session import Database
from tests.conftest import REPO_ROOT, TEST_SECRET_KEYS, KeyFactory

QUESTION = {
    "patient_id": "pat-1",
    "practitioner_id": "rpps:1",
    "category": "billing",
    "purpose": "referral",
}


def _limited_client(settings: Settings, database: Database, limits: str) -> FlaskClient:
    limited = dataclasses.replace(settings, rate_limits=limits)
    return create_app(limited, database=database).test_client()


def test_a_client_over_its_budget_gets_429_with_retry_after(
    settings: Settings, database: Database, api_key: KeyFactory
) -> None:
    client = _limited_client(settings, database, "decisions=3/minute")
    mine, theirs = api_key(), api_key()
    answers = [client.post("/v1/decisions", json=QUESTION, headers=mine) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.mimetype == "application/problem+json"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["Strict-Transport-Security"]
    # Per client: another key has its own budget. Per route: the batch route too.
    assert client.post("/v1/decisions", json=QUESTION, headers=theirs).status_code == 200
    batch = client.post("/v1/decisions:batch", json={"checks": [QUESTION]}, headers=mine)
    assert batch.status_code == 200


def test_off_disables_limits(settings: Settings, database: Database, auth: dict[str, str]) -> None:
    client = _limited_client(settings, database, "off")
    statuses = {client.get("/v1/consents", headers=auth).status_code for _ in range(30)}
    assert statuses == {200}


def test_memory_storage_is_accepted_for_one_process(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    limited = dataclasses.replace(
        settings, rate_limits="reads=2/minute", rate_limit_storage="memory://"
    )
    client = create_app(limited, database=database).test_client()
    statuses = [client.get("/v1/consents", headers=auth).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (loopback http)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def _pids_that_answered(access_log: Path, path: str) -> set[str]:
    """Worker pids in the access log lines (``%(p)s %(s)s %(U)s``) of ``path``."""
    if not access_log.exists():
        return set()
    lines = access_log.read_text().splitlines()
    return {line.split()[0] for line in lines if line.endswith(f" {path}")}


@pytest.mark.slow
def test_the_limit_holds_across_two_gunicorn_workers(
    database: Database, api_key: KeyFactory, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": database.url,
        "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0],
        "CONSENT_RATE_LIMITS": "reads=20/minute",
        "PYTHONPATH": str(REPO_ROOT),
    }
    access_log = tmp_path / "access.log"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:consent_service.gunicorn_conf",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            str(access_log),
            "--access-logformat",
            "%(p)s %(s)s %(U)s",
            "consent_service:create_app()",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # /healthz is not rate limited: drive it until both workers have
        # answered, so that both are up before the budget is spent.
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(_pids_that_answered(access_log, "/healthz")) < 2:
                assert server.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "both workers never answered /healthz"
                list(pool.map(lambda _: _get(f"{base}/healthz", {}), range(8)))
            # Then spend the budget, in concurrent batches, until both
            # workers have counted requests: the limit is then proved to be
            # shared, whichever worker took which request.
            headers = api_key(scopes=("consents:read",))
            statuses: list[int] = []
            while len(statuses) < 40 or len(_pids_that_answered(access_log, "/v1/consents")) < 2:
                assert time.monotonic() < deadline, "both workers never answered /v1/consents"
                statuses += pool.map(lambda _: _get(f"{base}/v1/consents", headers), range(8))
        assert Counter(statuses) == {200: 20, 429: len(statuses) - 20}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
