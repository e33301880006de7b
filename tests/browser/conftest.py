"""Browser tests: Debian's Chromium driven by Playwright against a real HTTP server.

The app is served on a loopback port by werkzeug's threaded server (one per
test, or several with different signing keys); the browser is never
downloaded: ``CONSENT_CHROMIUM`` (default ``/usr/bin/chromium``) is launched
through ``executable_path``. axe-core comes from npm into
``tests/browser/node_modules`` (``npm ci --prefix tests/browser``).
Screenshots of every page state land in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, sync_playwright
from werkzeug.serving import WSGIRequestHandler, make_server

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.session import Database
from tests.conftest import REPO_ROOT, TEST_SECRET_KEYS

CHROMIUM = Path(os.environ.get("CONSENT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PHONE: ViewportSize = {"width": 375, "height": 740}


class QuietHandler(WSGIRequestHandler):
    """werkzeug's request log prints query strings, hence tokens: keep it silent."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


Serve = Callable[..., str]


@pytest.fixture
def serve(database: Database) -> Iterator[Serve]:
    """Start the app on 127.0.0.1:<free port>; return its base URL. Stopped after the test."""
    servers: list[tuple[Any, threading.Thread]] = []

    def start(keys: tuple[str, ...] = TEST_SECRET_KEYS, rate_limits: str = "off") -> str:
        settings = Settings(database_url=database.url, secret_keys=keys, rate_limits=rate_limits)
        app = create_app(settings, database=database)
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: apt-get install chromium (or set CONSENT_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile on a phone-sized screen, French-speaking browser."""
    created = browser.new_context(viewport=PHONE, locale="fr-FR", java_script_enabled=True)
    yield created
    created.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def api(
    base: str, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    """One real HTTP call to the API; (status, JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - http to the loopback test server
        base + path,
        data=data,
        method=method,
        headers={**headers, **({"Content-Type": "application/json"} if data else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot for reviewers; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Serious and critical axe-core findings (WCAG 2.1 A/AA and best practice) on the page."""
    if not AXE.exists():
        message = f"{AXE} missing: npm ci --prefix tests/browser"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Evaluated over the DevTools protocol: the page's CSP (no script at
    # all) still holds for the page itself.
    page.evaluate(AXE.read_text())
    results = page.evaluate(
        """() => axe.run(document, {
            runOnly: {
                type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']
            }
        })"""
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]
