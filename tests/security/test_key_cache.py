"""The per-worker cache of verified API keys: what it remembers, and the revocation bound.

A revoked key must stop in every worker within ``CONSENT_API_KEY_CACHE_MS``
of the revocation's commit; the last test checks that on two gunicorn
workers that both had the key cached.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from consent_service.config import ConfigError, Settings
from consent_service.db.audit_models import ApiKey
from consent_service.db.session import Database
from consent_service.services.clients import Principal, create_client, revoke_key
from consent_service.services.key_cache import VerifiedKeys
from consent_service.timefmt import utcnow
from tests.conftest import REPO_ROOT, TEST_SECRET_KEYS

CALLER = Principal("client-1", "practice-a", frozenset({"consents:read"}))


def test_a_remembered_key_is_trusted_for_the_ttl_only() -> None:
    keys = VerifiedKeys(ttl_ms=1000)
    now = utcnow()
    keys.remember("csk_a_secret", CALLER, expires_at=None, checked_at=keys.clock())
    assert keys.principal("csk_a_secret", now) == CALLER
    assert keys.principal("csk_a_other", now) is None  # another secret, same prefix
    keys.remember("csk_b_secret", CALLER, expires_at=None, checked_at=keys.clock() - 1.0)
    assert keys.principal("csk_b_secret", now) is None  # checked a second ago: ask again


def test_a_key_expiring_while_cached_stops_at_its_expiry() -> None:
    keys = VerifiedKeys(ttl_ms=1000)
    now = utcnow()
    expires_at = now + timedelta(milliseconds=10)
    keys.remember("csk_a_secret", CALLER, expires_at=expires_at, checked_at=keys.clock())
    assert keys.principal("csk_a_secret", now) == CALLER
    assert keys.principal("csk_a_secret", expires_at) is None


def test_zero_turns_the_cache_off_and_the_bound_is_one_second() -> None:
    keys = VerifiedKeys(ttl_ms=0)
    keys.remember("csk_a_secret", CALLER, expires_at=None, checked_at=keys.clock())
    assert keys.principal("csk_a_secret", utcnow()) is None
    assert Settings.from_env({"CONSENT_API_KEY_CACHE_MS": "0"}).api_key_cache_ms == 0
    assert Settings.from_env({}).api_key_cache_ms == 1000
    for bad in ("1001", "-1", "soon"):
        with pytest.raises(ConfigError, match="CONSENT_API_KEY_CACHE_MS"):
            Settings.from_env({"CONSENT_API_KEY_CACHE_MS": bad})


def test_a_cached_key_whose_expiry_is_moved_up_stops_within_the_ttl(
    database: Database, settings: Settings
) -> None:
    from consent_service import create_app

    with database.transaction() as session:
        client, key = create_client(
            session, organization="practice-a", scopes=["consents:read"], name="t", now=utcnow()
        )
    http = create_app(settings, database=database).test_client()
    headers = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/consents", headers=headers).status_code == 200
    with database.transaction() as session:
        session.execute(
            update(ApiKey).where(ApiKey.client_id == client.id).values(expires_at=utcnow())
        )
    bound = time.monotonic() + settings.api_key_cache_ms / 1000
    while True:
        started = time.monotonic()
        response = http.get("/v1/consents", headers=headers)
        if response.status_code != 200:
            break
        assert started < bound, "a key past its expiry was accepted after the cache time"
    assert response.status_code == 401


def _get(url: str, headers: dict[str, str]) -> tuple[float, int]:
    """(when the request started, its status; 0 when no answer)."""
    started = time.monotonic()
    request = urllib.request.Request(url, headers=headers)  # noqa: S310  (loopback http)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return started, int(response.status)
    except urllib.error.HTTPError as error:
        return started, error.code
    except OSError:
        return started, 0


def _pids_answering(log: Path, status: int) -> set[str]:
    return {
        line.split()[0]
        for line in log.read_text().splitlines()
        if line.endswith(f" {status} /v1/consents")
    }


@pytest.mark.slow
def test_a_revoked_key_stops_in_every_gunicorn_worker_within_the_ttl(
    database: Database, tmp_path: Path
) -> None:
    with database.transaction() as session:
        _, key = create_client(
            session, organization="practice-a", scopes=["consents:read"], name="t", now=utcnow()
        )
    headers = {"Authorization": f"Bearer {key}"}
    log = tmp_path / "access.log"
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": database.url,
        "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0],
        "CONSENT_RATE_LIMITS": "off",
        "CONSENT_API_KEY_CACHE_MS": "1000",
        "PYTHONPATH": str(REPO_ROOT),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:0",
            "--access-logfile",
            str(log),
            "--access-logformat",
            "%(p)s %(s)s %(U)s",
            "consent_service:create_app()",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = _wait_for_address(server)
        url = f"{base}/v1/consents"
        deadline = time.monotonic() + 60
        while _get(f"{base}/healthz", {})[1] != 200:
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.2)
        with ThreadPoolExecutor(max_workers=4) as pool:
            # Both workers answer 200 (so both checked and cached the key).
            while len(_pids_answering(log, 200)) < 2:
                assert time.monotonic() < deadline, "both workers must answer"
                assert {s for _, s in pool.map(lambda _: _get(url, headers), range(8))} == {200}
            prefix = key.split("_")[1]
            with database.transaction() as session:
                revoke_key(session, prefix=prefix, now=utcnow())
            bound = time.monotonic() + 1.0
            # Until both workers have refused the key, every answer that
            # started after the bound is a 401.
            while len(_pids_answering(log, 401)) < 2:
                assert time.monotonic() < deadline, "both workers must refuse the key"
                for started, status in pool.map(lambda _: _get(url, headers), range(8)):
                    assert status in (200, 401)
                    if status == 200:
                        assert started < bound, "a revoked key was accepted after 1 s"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _wait_for_address(server: subprocess.Popen[str]) -> str:
    """The address gunicorn bound (port 0: the system chose a free one)."""
    assert server.stderr is not None
    deadline = time.monotonic() + 30
    for line in server.stderr:
        if "Listening at:" in line:
            address = line.split("Listening at:")[1].split()[0]
            # Keep reading what it writes, so that a full pipe never blocks it.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return address.rstrip("/")
        assert time.monotonic() < deadline, "gunicorn did not start"
    raise AssertionError("gunicorn exited before listening")
