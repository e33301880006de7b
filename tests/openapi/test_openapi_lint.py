"""schemas/openapi.json passes two standard linters and this project's completeness rules.

openapi-spec-validator checks the document against the OpenAPI 3.1 schema;
Spectral (``spectral:oas``, pinned in ``tests/openapi/package.json``,
installed by ``npm ci --prefix tests/openapi``) fails the test on any error.
The completeness rules say what a partner needs from every operation: an
``operationId``, a security requirement or an explicit none, every 4xx as
``application/problem+json`` with the shared Problem schema, the request id
on every answer. Whether the declared statuses and headers are the ones the
API really sends is checked by test_openapi_matches_answers.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from consent_service.openapi_export import DEFAULT_PATH

HERE = Path(__file__).parent
SPECTRAL = HERE / "node_modules" / ".bin" / "spectral"
METHODS = ("get", "put", "post", "patch", "delete")
PROBLEM = {"$ref": "#/components/schemas/Problem"}
# The request headers the API reads (besides Authorization, the security scheme).
HEADERS_READ = {"If-Match", "Idempotency-Key", "X-Request-Id"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    return loaded


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow one local ``$ref`` (``#/components/...``)."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_the_openapi_schema_validates_it(document: dict[str, Any]) -> None:
    validate(document)


def test_spectral_oas_finds_no_error() -> None:
    if not SPECTRAL.exists():
        message = f"{SPECTRAL} missing: npm ci --prefix tests/openapi"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finished = subprocess.run(
        [
            str(SPECTRAL),
            "lint",
            str(DEFAULT_PATH),
            "--ruleset",
            str(HERE / ".spectral.yaml"),
            "--fail-severity",
            "error",
            "--format",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    findings = json.loads(finished.stdout or "[]")
    errors = [
        f"{'.'.join(map(str, f['path']))}: {f['message']}" for f in findings if not f["severity"]
    ]
    assert finished.returncode == 0 and not errors, (finished.stderr, errors)


def test_the_document_names_its_servers(document: dict[str, Any]) -> None:
    assert document["servers"], "a client needs to know where the paths are rooted"
    assert all("url" in server for server in document["servers"])


def test_every_operation_has_a_unique_operation_id(document: dict[str, Any]) -> None:
    ids = [operation.get("operationId") for _, _, operation in operations(document)]
    assert all(ids), [(p, m) for p, m, o in operations(document) if not o.get("operationId")]
    assert len(ids) == len(set(ids)), ids


def test_every_operation_states_its_security(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    for path, method, operation in operations(document):
        assert "security" in operation, (path, method, "security, or an explicit []")
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes), (path, method, requirement)
        if operation["security"]:
            assert {"401", "403", "429"} <= set(operation["responses"]), (path, method)
            assert operation.get("x-scope"), (path, method, "which scope the key needs")


def test_every_error_is_problem_json_with_the_shared_schema(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45" or s == "default"}
        assert any(s.startswith("4") for s in errors), (path, method, "no 4xx documented")
        for status, response in errors.items():
            content = resolve(document, response).get("content", {})
            assert list(content) == ["application/problem+json"], (path, method, status)
            assert content["application/problem+json"]["schema"] == PROBLEM, (path, method, status)


def test_every_answer_declares_the_request_id(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        for status, response in operation["responses"].items():
            headers = resolve(document, response).get("headers", {})
            assert "X-Request-Id" in headers, (path, method, status)


def test_the_problem_schema_carries_the_validation_extension(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])
    errors = resolve(document, problem["properties"]["errors"]["items"])
    assert set(errors["required"]) == {"location", "field", "detail"}


def test_request_bodies_and_the_headers_partners_send_are_declared(
    document: dict[str, Any],
) -> None:
    for path, method, operation in operations(document):
        parameters = [resolve(document, p) for p in operation.get("parameters", [])]
        names = {p["name"] for p in parameters}
        headers = {p["name"] for p in parameters if p["in"] == "header"}
        assert headers <= HEADERS_READ, (path, method, headers - HEADERS_READ)
        if method in ("post", "patch"):
            assert "requestBody" in operation, (path, method)
            assert "Idempotency-Key" in names or "decision" in path, (path, method)
        if method == "patch":
            assert "If-Match" in names, (path, method)
