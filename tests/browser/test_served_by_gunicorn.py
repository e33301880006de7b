"""The whole journey through gunicorn as deployed, and no token in its logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from consent_service.db.session import Database
from tests.browser.conftest import api, shot
from tests.conftest import REPO_ROOT, TEST_SECRET_KEYS, KeyFactory
from tests.support.waiting import wait_until
from tests.web.conftest import request_body

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def gunicorn(database: Database, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """gunicorn with the service's own config on a loopback port; its output in a file."""
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": database.url,
        "CONSENT_SECRET_KEYS": ",".join(TEST_SECRET_KEYS),
        "CONSENT_RATE_LIMITS": "off",
        "CONSENT_WEB_CONCURRENCY": "1",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:consent_service.gunicorn_conf",
             "--bind", f"127.0.0.1:{port}", "consent_service:create_app()"],
            cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=1):  # noqa: S310
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(log.read_text()) from None
                    time.sleep(0.2)
            yield base, log
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_grant_and_withdraw_through_gunicorn_log_no_token(
    page: Page, gunicorn: tuple[str, Path], api_key: KeyFactory
) -> None:
    base, log = gunicorn
    auth = api_key()
    status, created = api(base, "POST", "/v1/consent-requests", auth, request_body())
    assert status == 201, created
    page.goto(created["form_url"])
    page.get_by_role("button", name="J'accepte").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Merci, votre accord est enregistré")
    page.get_by_role("link", name="Voir ou retirer mes consentements").click()
    page.get_by_role("button", name="Retirer ce consentement").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Votre consentement est retiré")
    shot(page, "40-withdrawn-through-gunicorn")
    form_token = parse_qs(urlsplit(created["form_url"]).query)["t"][0]
    page.goto(f"{base}/consent/request?t={form_token[:-2]}xx")

    # The worker writes a request's line before it answers; wait for the last
    # one (the refused token) to be in the file all the same, with a deadline.
    wait_until(lambda: _refused_form_request_logged(log), 10, "the last request's log line")
    logged = log.read_text()
    assert "/consent/request" in logged and "/consent/mine" in logged
    manage_token = parse_qs(urlsplit(created["manage_url"]).query)["t"][0]
    for secret in (form_token, manage_token, form_token[:40], manage_token[:40]):
        assert secret not in logged


def _refused_form_request_logged(log: Path) -> bool:
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # gunicorn's own lines are plain text
        if entry.get("route") == "/consent/request" and entry.get("status", 0) >= 400:
            return True
    return False
