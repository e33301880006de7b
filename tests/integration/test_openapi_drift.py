"""schemas/openapi.json is the app's OpenAPI document, byte for byte."""

from __future__ import annotations

import json
from typing import Any

from consent_service.openapi_export import DEFAULT_PATH, REGENERATE, openapi_document, render


def _differences(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Where the two documents part, as short JSON-pointer-like paths."""
    found: list[str] = []

    def walk(left: Any, right: Any, path: str) -> None:
        if len(found) >= 20:
            return
        if isinstance(left, dict) and isinstance(right, dict):
            for key in sorted(set(left) | set(right)):
                if key not in left:
                    found.append(f"{path}/{key}: only in the app")
                elif key not in right:
                    found.append(f"{path}/{key}: only in the committed file")
                else:
                    walk(left[key], right[key], f"{path}/{key}")
        elif left != right:
            found.append(f"{path}: changed")

    walk(committed, current, "")
    return found


def test_committed_openapi_matches_the_app() -> None:
    current = openapi_document()
    assert DEFAULT_PATH.exists(), f"schemas/openapi.json is missing; run `{REGENERATE}`"
    committed_text = DEFAULT_PATH.read_text(encoding="utf-8")
    if committed_text != render(current):
        where = _differences(json.loads(committed_text), current) or ["formatting only"]
        raise AssertionError(
            "schemas/openapi.json drifted from the app; regenerate it with "
            f"`{REGENERATE}` and commit it with the change.\n  " + "\n  ".join(where)
        )


def test_document_covers_the_rest_table() -> None:
    """Each row of the REST table in docs/design.md is in the document with its statuses."""
    paths = openapi_document()["paths"]
    expected = {
        ("/v1/consents", "post"): {"201", "422"},
        ("/v1/consents", "get"): {"200"},
        ("/v1/consents/{consent_id}", "get"): {"200"},
        ("/v1/consents/{consent_id}", "patch"): {"200", "412", "428"},
        ("/v1/consents/{consent_id}/revoke", "post"): {"200", "409"},
        ("/v1/consents/{consent_id}/versions", "get"): {"200"},
        ("/v1/consents/{consent_id}/versions/{number}", "get"): {"200"},
        ("/v1/decisions", "post"): {"200"},
        ("/v1/decisions:batch", "post"): {"200"},
        ("/v1/practitioners/{practitioner_id}/revoke-all", "post"): {"200"},
        ("/v1/patients/{patient_id}/export", "get"): {"200"},
        ("/v1/events", "get"): {"200"},
    }
    for (path, method), statuses in expected.items():
        assert path in paths, path
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (path, method, operation["responses"])
        assert operation.get("summary"), (path, method, "needs a one-line docstring")


def test_render_is_stable() -> None:
    document = openapi_document()
    assert render(document) == render(json.loads(render(document)))
    assert render(document).endswith("}\n")
