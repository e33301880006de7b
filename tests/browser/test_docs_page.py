"""``/docs`` in Chromium: Swagger UI lists every operation, and its CSP is never violated.

The page's policy allows scripts, styles and requests from its own origin
only. A ``securitypolicyviolation`` listener, installed over the DevTools
protocol before the page's own scripts, records any refusal; the console
and every request are watched too.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import ConsoleMessage, Page, Request

from tests.browser.conftest import Serve, shot

RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI);
});
"""
TIMEOUT_MS = 20_000


def _operations(base: str) -> list[tuple[str, str]]:
    with urllib.request.urlopen(f"{base}/openapi.json", timeout=10) as response:  # noqa: S310 - loopback test server
        document: dict[str, Any] = json.load(response)
    return [
        (operation["tags"][0], operation["operationId"])
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in ("get", "post", "patch", "put", "delete")
    ]


def test_docs_lists_every_operation_under_its_strict_csp(serve: Serve, page: Page) -> None:
    base = serve()
    console: list[str] = []
    requested: list[str] = []
    page.on("console", lambda message: _keep_problems(console, message))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.on("request", lambda request: _keep_url(requested, request))
    page.add_init_script(RECORD_VIOLATIONS)

    response = page.goto(f"{base}/docs")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "nonce-" not in csp

    operations = _operations(base)
    for tag, operation_id in operations:
        page.locator(f"#operations-{tag}-{operation_id}").wait_for(timeout=TIMEOUT_MS)
    assert page.locator(".opblock").count() == len(operations)
    page.get_by_text("createConsent").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    shot(page, "docs")

    assert page.evaluate("window.cspViolations") == []
    assert console == []
    origin = urlsplit(base).netloc
    assert all(urlsplit(url).netloc == origin for url in requested if "://" in url), requested


def _keep_problems(found: list[str], message: ConsoleMessage) -> None:
    if message.type in ("error", "warning") or "Content Security Policy" in message.text:
        found.append(f"{message.type}: {message.text}")


def _keep_url(found: list[str], request: Request) -> None:
    if not request.url.startswith("data:"):
        found.append(request.url)
