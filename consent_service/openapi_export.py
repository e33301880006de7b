"""Writes the app's OpenAPI document to ``schemas/openapi.json``.

The published file is a contract partners read without running the service,
so it is generated from the app itself and a test fails when the two drift.
Regenerate after changing a route or a schema::

    python -m consent_service.openapi_export
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from consent_service.app import create_app
from consent_service.config import Settings

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "schemas" / "openapi.json"
REGENERATE = "python -m consent_service.openapi_export"

# The document must not depend on the machine: an in-memory database and a
# fixed, public signing key are enough to build the app and read its routes.
_EXPORT_SETTINGS = Settings(
    database_url="sqlite://",
    secret_keys=("openapi-export-only-not-a-secret",),
    rate_limits="off",
)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document exactly as the app serves it at ``/openapi.json``."""
    app = create_app(_EXPORT_SETTINGS)
    response = app.test_client().get("/openapi.json")
    if response.status_code != 200:
        raise RuntimeError(f"/openapi.json answered {response.status_code}")
    document: dict[str, Any] = response.get_json()
    return document


def render(document: dict[str, Any]) -> str:
    """The stable text form: sorted keys, two-space indent, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else DEFAULT_PATH
    target.write_text(render(openapi_document()), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
