"""The code systems, identifier systems and extensions of the FHIR face.

The service's own vocabularies (data categories, purposes, collection
methods) are published as CodeSystem resources under the FHIR base, so their
canonical URLs are built on the service's public address
(``CONSENT_PUBLIC_URL``, else the address the request came to). Where a
standard code means the same thing, it is added beside the service's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consent_service.config import Settings

FHIR_VERSION = "4.0.1"
LOINC = "http://loinc.org"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RPPS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"
UUID_SYSTEM = "urn:ietf:rfc:3986"

# The standard codes that mean exactly one of the default purposes.
STANDARD_PURPOSES = {
    "care-coordination": ("TREAT", "treatment"),
    "emergency": ("ETREAT", "emergency treatment"),
}
COLLECTION_METHODS = ("web-form", "paper", "email", "verbal", "partner-api")

CODE_SYSTEM_TITLES = {
    "data-category": ("Data categories", "Kinds of a patient's health data a consent covers."),
    "purpose": ("Purposes", "Why a practitioner may see the data."),
    "collection-method": ("Collection methods", "How the patient's consent was collected."),
}


@dataclass(frozen=True)
class Canon:
    """Canonical URLs under one FHIR base (``https://host/fhir/r4``)."""

    base: str

    def code_system(self, name: str) -> str:
        return f"{self.base}/CodeSystem/{name}"

    def extension(self, name: str) -> str:
        return f"{self.base}/StructureDefinition/{name}"

    def identifier_system(self, name: str) -> str:
        return f"{self.base}/NamingSystem/{name}"

    def policy_uri(self, version: str) -> str:
        return f"{self.base}/policy/{version}"


def concepts(settings: Settings, name: str) -> tuple[str, ...]:
    """The codes of one of the service's code systems, as configured."""
    if name == "data-category":
        return settings.categories
    if name == "purpose":
        return settings.purposes
    return COLLECTION_METHODS


def code_system(settings: Settings, canon: Canon, name: str) -> dict[str, Any]:
    """A CodeSystem resource listing one vocabulary (``complete`` content)."""
    title, description = CODE_SYSTEM_TITLES[name]
    codes = concepts(settings, name)
    return {
        "resourceType": "CodeSystem",
        "id": name,
        "url": canon.code_system(name),
        "name": "".join(word.capitalize() for word in name.split("-")),
        "title": title,
        "status": "active",
        "experimental": False,
        "description": description,
        "caseSensitive": True,
        "content": "complete",
        "count": len(codes),
        "concept": [{"code": code, "display": code.replace("-", " ")} for code in codes],
    }


def purpose_codings(canon: Canon, purposes: list[str]) -> list[dict[str, str]]:
    """The service's purpose codes, then the standard ones that mean the same."""
    own = [{"system": canon.code_system("purpose"), "code": purpose} for purpose in purposes]
    standard = [
        {"system": ACT_REASON, "code": STANDARD_PURPOSES[purpose][0]}
        | {"display": STANDARD_PURPOSES[purpose][1]}
        for purpose in purposes
        if purpose in STANDARD_PURPOSES
    ]
    return own + standard


def purpose_from_standard(code: str) -> str | None:
    """The service's purpose for a standard ActReason code, if one means exactly that."""
    for purpose, (standard, _) in STANDARD_PURPOSES.items():
        if standard == code:
            return purpose
    return None
