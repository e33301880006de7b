"""``/docs`` is served from this origin: no CDN, no inline script or style, a strict CSP.

tests/browser/test_docs_page.py renders it in Chromium; these checks read
what the service sends.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from flask.testing import FlaskClient


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "style" or "style" in named or any(n.startswith("on") for n in named):
            self.inline.append(tag)
        if tag == "script":
            self._in_script = True
            self.loaded.append(named["src"] or "") if named.get("src") else self.inline.append(tag)
        if tag == "link" and named.get("href"):
            self.loaded.append(named["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("script text")


def test_the_page_loads_only_same_origin_files(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    collector = _Collector()
    collector.feed(page.get_data(as_text=True))
    assert collector.inline == []
    assert collector.loaded, "the page loads Swagger UI"
    for url in collector.loaded:
        assert url.startswith("/docs/assets/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["X-Content-Type-Options"] == "nosniff"


def test_assets_have_their_types_and_the_license_travels_with_them(client: FlaskClient) -> None:
    assert client.get("/docs/assets/swagger-ui-bundle.js").mimetype == "text/javascript"
    assert client.get("/docs/assets/swagger-ui.css").mimetype == "text/css"
    license_text = client.get("/docs/assets/LICENSE").get_data(as_text=True)
    assert re.search(r"Apache License", license_text)


def test_only_listed_files_are_served(client: FlaskClient) -> None:
    for name in ("index.template.html", "..%2Fapp.py", "oauth2-redirect.html"):
        answer = client.get(f"/docs/assets/{name}")
        assert answer.status_code == 404, name
        assert answer.mimetype == "application/problem+json"
