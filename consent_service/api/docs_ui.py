"""``/docs``: the API reference page, served by the service itself.

Swagger UI's files come from the ``flask-swagger-ui`` package (its ``dist``
folder, with Swagger UI's Apache-2.0 license at ``/docs/assets/LICENSE``);
only its static files are used, not its blueprint, whose page starts Swagger
UI with an inline script. This page loads everything from this origin as
files: no inline script or style, no CDN, so its CSP allows ``'self'`` alone
(plus ``data:`` images, which Swagger UI's stylesheet uses for its icons).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, abort, send_file

blp = Blueprint("docs_ui", __name__)

OWN_ASSETS = Path(__file__).resolve().parent / "docs_assets"
SWAGGER_UI = Path(str(files("flask_swagger_ui").joinpath("dist")))
# Every file the page may load, by its public name: nothing else is served.
ASSETS = {
    "docs.js": OWN_ASSETS / "docs.js",
    "docs.css": OWN_ASSETS / "docs.css",
    "swagger-ui-bundle.js": SWAGGER_UI / "swagger-ui-bundle.js",
    "swagger-ui.css": SWAGGER_UI / "swagger-ui.css",
    "favicon-32x32.png": SWAGGER_UI / "favicon-32x32.png",
    "LICENSE": SWAGGER_UI / "LICENSE",
}
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_MAX_AGE_S = 3600


@blp.get("/docs")
def docs_page() -> Response:
    """The reference page; Swagger UI reads ``/openapi.json`` from the same origin."""
    response = send_file(OWN_ASSETS / "index.html", mimetype="text/html", max_age=0)
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@blp.get("/docs/assets/<name>")
def docs_asset(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        abort(404)
    mimetype = "text/plain" if name == "LICENSE" else None
    return send_file(path, mimetype=mimetype, max_age=ASSET_MAX_AGE_S)
