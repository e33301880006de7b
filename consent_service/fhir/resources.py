"""The non-Consent resources of the FHIR face: OperationOutcome, Bundle, CapabilityStatement."""

from __future__ import annotations

from typing import Any

from consent_service.fhir.terminology import CODE_SYSTEM_TITLES, FHIR_VERSION, Canon

FHIR_JSON = "application/fhir+json"

# OperationOutcome issue codes (http://hl7.org/fhir/issue-type) by HTTP status.
ISSUE_CODES = {
    400: "structure",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    428: "required",
    429: "throttled",
    503: "transient",
}


def operation_outcome(
    status: int, detail: str, issues: list[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """An OperationOutcome: one issue per refused element, or one for the whole request."""
    code = ISSUE_CODES.get(status, "exception" if status >= 500 else "processing")
    severity = "error" if status < 500 else "fatal"
    if not issues:
        return {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": detail}],
        }
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": severity, "code": code, "diagnostics": text, "expression": [path]}
            for path, text in issues
        ],
    }


def bundle(
    kind: str, resources: list[dict[str, Any]], canon: Canon, links: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Bundle of ``kind`` (searchset, history, collection) over ``resources``."""
    entries = []
    for resource in resources:
        full_url = f"{canon.base}/{resource['resourceType']}/{resource['id']}"
        entry: dict[str, Any] = {"fullUrl": full_url, "resource": resource}
        if kind == "searchset":
            entry["search"] = {"mode": "match"}
        if kind == "history":
            entry["request"] = {
                "method": "POST" if resource["meta"]["versionId"] == "1" else "PUT",
                "url": f"Consent/{resource['id']}/_history/{resource['meta']['versionId']}",
            }
            entry["response"] = {
                "status": "201" if resource["meta"]["versionId"] == "1" else "200",
                "etag": f'W/"{resource["meta"]["versionId"]}"',
                "lastModified": resource["meta"]["lastUpdated"],
            }
        entries.append(entry)
    document: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if kind in ("searchset", "history"):
        document["total"] = len(resources) if kind == "history" or not links else None
        if document["total"] is None:
            del document["total"]
    if links:
        document["link"] = [{"relation": rel, "url": url} for rel, url in links.items()]
    document["entry"] = entries
    return document


SEARCH_PARAMS = [
    ("patient", "reference", "The patient: Patient/<id> or <id> (the practice's reference)."),
    ("actor", "token", "The practitioner: an RPPS number (system|value) or the practitioner id."),
    ("status", "token", "active or inactive (revoked or expired)."),
    ("_lastUpdated", "date", "When the current version was recorded (ge, gt, le, lt, eq)."),
    ("_count", "number", "Page size, 1 to 100 (default 20)."),
]


def capability_statement(canon: Canon, published_at: str) -> dict[str, Any]:
    """What this FHIR face can do; amend and revoke stay on the v1 API."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published_at,
        "kind": "instance",
        "software": {"name": "consent-service"},
        "implementation": {
            "description": "consent-service FHIR R4 Consent interface",
            "url": canon.base,
        },
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Consents are recorded with POST and read, versioned, searched and exported "
                    "here. Amending and revoking a consent is done with the v1 API "
                    "(PATCH /v1/consents/{id}, POST /v1/consents/{id}/revoke): no PUT or DELETE."
                ),
                "security": {
                    "cors": False,
                    "description": "Authorization: Bearer <API key>, as on the v1 API.",
                },
                "resource": [_consent_capability(), *_code_system_capability()],
            }
        ],
    }


def _consent_capability() -> dict[str, Any]:
    return {
        "type": "Consent",
        "interaction": [
            {"code": code}
            for code in ("read", "vread", "history-instance", "search-type", "create")
        ],
        "versioning": "versioned",
        "readHistory": True,
        "updateCreate": False,
        "conditionalCreate": True,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {"name": name, "type": kind, "documentation": text}
            for name, kind, text in SEARCH_PARAMS
        ],
        "operation": [
            {
                "name": "consent-export",
                "definition": "OperationDefinition/Patient-consent-export",
                "documentation": (
                    "GET Patient/{id}/$consent-export: every consent of the patient with every "
                    "version, as a collection Bundle (the GDPR right of access)."
                ),
            }
        ],
    }


def _code_system_capability() -> list[dict[str, Any]]:
    return [
        {
            "type": "CodeSystem",
            "interaction": [{"code": "read"}],
            "documentation": "The service's vocabularies: " + ", ".join(CODE_SYSTEM_TITLES) + ".",
        }
    ]
