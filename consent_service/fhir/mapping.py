"""A consent version as a FHIR R4 Consent, and a FHIR Consent as a consent to record.

The table in docs/fhir.md is the contract; this module is its code. Reading
is lossless for what a consent holds. Writing accepts exactly what the table
lists: an element the service cannot hold (nested provisions, data
references, a performer, ...) is refused with its path, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from consent_service.fhir.terminology import (
    ACT_CODE,
    ACT_REASON,
    CONSENT_SCOPE,
    LOINC,
    PARTICIPATION_TYPE,
    RPPS_SYSTEM,
    UUID_SYSTEM,
    Canon,
    purpose_codings,
    purpose_from_standard,
)

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
RPPS_PREFIX = "rpps:"
POLICY_RULES = {"permit": "OPTIN", "deny": "OPTOUT"}
RECIPIENT_ROLE = {"system": PARTICIPATION_TYPE, "code": "IRCP", "display": "information recipient"}
PRIVACY_SCOPE = {"system": CONSENT_SCOPE, "code": "patient-privacy", "display": "Privacy Consent"}
CONSENT_CATEGORY = {"system": LOINC, "code": "59284-0", "display": "Patient Consent"}


def to_resource(consent: dict[str, Any], canon: Canon) -> dict[str, Any]:
    """One version of a consent (the v1 snapshot) as a FHIR R4 Consent resource."""
    status = "active" if consent["status"] == "active" else "inactive"
    period = {"start": consent["valid_from"]}
    if consent["valid_until"]:
        period["end"] = consent["valid_until"]
    collection = consent["collection"]
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": consent["id"],
        "meta": {"versionId": str(consent["version"]), "lastUpdated": consent["recorded_at"]},
        "extension": [
            {"url": canon.extension("consent-status"), "valueCode": consent["status"]},
            {"url": canon.extension("collection-method"), "valueCode": collection["method"]},
        ],
        "identifier": [{"system": UUID_SYSTEM, "value": f"urn:uuid:{consent['id']}"}],
        "status": status,
        "scope": {"coding": [PRIVACY_SCOPE]},
        "category": [{"coding": [CONSENT_CATEGORY]}],
        "patient": _reference(
            "Patient", canon.identifier_system("patient-id"), consent["patient_id"]
        ),
        "dateTime": consent["created_at"],
        "organization": [
            _reference(
                "Organization", canon.identifier_system("organization"), consent["organization"]
            )
        ],
        "policyRule": {"coding": [{"system": ACT_CODE, "code": POLICY_RULES[consent["decision"]]}]},
        "provision": {
            "type": consent["decision"],
            "period": period,
            "actor": [
                {
                    "role": {"coding": [RECIPIENT_ROLE]},
                    "reference": _practitioner(canon, consent["practitioner_id"]),
                }
            ],
            "purpose": purpose_codings(canon, consent["purposes"]),
            "code": [
                {"coding": [{"system": canon.code_system("data-category"), "code": category}]}
                for category in consent["categories"]
            ],
        },
    }
    if collection["policy_version"]:
        resource["policy"] = [{"uri": canon.policy_uri(collection["policy_version"])}]
    if collection["evidence_ref"]:
        resource["sourceAttachment"] = {"title": collection["evidence_ref"]}
    return resource


def _reference(kind: str, system: str, value: str) -> dict[str, Any]:
    reference: dict[str, Any] = {"identifier": {"system": system, "value": value}}
    # A literal reference only where the value is a valid FHIR id: ids with
    # ':' or '/' are identifiers, not resource ids.
    if FHIR_ID.fullmatch(value):
        reference["reference"] = f"{kind}/{value}"
    return reference


def _practitioner(canon: Canon, practitioner_id: str) -> dict[str, Any]:
    if practitioner_id.startswith(RPPS_PREFIX):
        return {"identifier": {"system": RPPS_SYSTEM, "value": practitioner_id[len(RPPS_PREFIX) :]}}
    return {
        "identifier": {
            "system": canon.identifier_system("practitioner-id"),
            "value": practitioner_id,
        }
    }


@dataclass
class Reading:
    """What a posted Consent asks to record (a v1 create body), or why it cannot."""

    body: dict[str, Any] = field(default_factory=dict)
    issues: list[tuple[str, str]] = field(default_factory=list)

    def refuse(self, path: str, detail: str) -> None:
        self.issues.append((path, detail))


# Elements of a posted Consent and what the service does with each.
ACCEPTED = {
    "resourceType", "id", "meta", "text", "extension", "status", "scope",
    "category", "patient", "dateTime", "organization", "policy", "policyRule",
    "sourceAttachment", "provision",
}  # fmt: skip
PROVISION_ACCEPTED = {"type", "period", "actor", "purpose", "code"}


def from_resource(resource: Any, canon: Canon, organization: str) -> Reading:
    """Read a posted FHIR Consent into a v1 create body, collecting every refusal."""
    reading = Reading()
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        reading.refuse("resourceType", "Post a Consent resource.")
        return reading
    for name in sorted(set(resource) - ACCEPTED):
        reading.refuse(f"Consent.{name}", "This service cannot record this element.")
    if resource.get("status") != "active":
        reading.refuse("Consent.status", "Only an active consent can be recorded.")
    _expect_coding(reading, resource.get("scope"), "Consent.scope", PRIVACY_SCOPE)
    _read_category(reading, resource.get("category"))
    _read_extensions(reading, resource.get("extension", []), canon)
    reading.body["patient_id"] = _read_identifier(
        reading,
        resource.get("patient"),
        "Consent.patient",
        "Patient",
        canon.identifier_system("patient-id"),
    )
    for index, org in enumerate(
        _list(reading, resource.get("organization", []), "Consent.organization")
    ):
        named = _read_identifier(
            reading,
            org,
            f"Consent.organization[{index}]",
            "Organization",
            canon.identifier_system("organization"),
        )
        if named is not None and named != organization:
            reading.refuse(
                f"Consent.organization[{index}]",
                "Consents are recorded for your own organization only.",
            )
    provision = resource.get("provision")
    if not isinstance(provision, dict):
        reading.refuse(
            "Consent.provision", "Required: the type, actor, purposes and data categories."
        )
        return reading
    _read_provision(reading, provision, canon)
    _read_collection(reading, resource, canon)
    return reading


def _read_provision(reading: Reading, provision: dict[str, Any], canon: Canon) -> None:
    for name in sorted(set(provision) - PROVISION_ACCEPTED):
        reading.refuse(f"Consent.provision.{name}", "This service cannot record this element.")
    decision = provision.get("type")
    if decision not in ("permit", "deny"):
        reading.refuse("Consent.provision.type", "permit or deny.")
    reading.body["decision"] = decision
    period = provision.get("period", {})
    if not isinstance(period, dict) or set(period) - {"start", "end"}:
        reading.refuse("Consent.provision.period", "A period with start and/or end.")
        period = {}
    reading.body["valid_from"] = period.get("start")
    reading.body["valid_until"] = period.get("end")
    actors = _list(reading, provision.get("actor"), "Consent.provision.actor")
    if len(actors) != 1:
        reading.refuse(
            "Consent.provision.actor", "Exactly one actor: the practitioner who may see the data."
        )
    else:
        reading.body["practitioner_id"] = _read_actor(reading, actors[0], canon)
    reading.body["purposes"] = _read_purposes(reading, provision.get("purpose"), canon)
    reading.body["categories"] = _read_categories(reading, provision.get("code"), canon)


def _read_actor(reading: Reading, actor: Any, canon: Canon) -> str | None:
    path = "Consent.provision.actor[0]"
    if not isinstance(actor, dict) or set(actor) - {"role", "reference"}:
        reading.refuse(path, "An actor with a role and a reference.")
        return None
    codings = (
        actor.get("role", {}).get("coding", []) if isinstance(actor.get("role"), dict) else None
    )
    if not isinstance(codings, list) or not any(
        isinstance(c, dict) and c.get("system") == PARTICIPATION_TYPE and c.get("code") == "IRCP"
        for c in codings
    ):
        reading.refuse(f"{path}.role", f"The recipient role ({PARTICIPATION_TYPE}#IRCP).")
    identifier = (
        actor.get("reference", {}).get("identifier")
        if isinstance(actor.get("reference"), dict)
        else None
    )
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        reading.refuse(f"{path}.reference", "Identify the practitioner by an identifier.")
        return None
    if identifier.get("system") == RPPS_SYSTEM:
        return RPPS_PREFIX + identifier["value"]
    if identifier.get("system") == canon.identifier_system("practitioner-id"):
        return str(identifier["value"])
    reading.refuse(
        f"{path}.reference.identifier.system",
        f"An RPPS number ({RPPS_SYSTEM}) or {canon.identifier_system('practitioner-id')}.",
    )
    return None


def _read_purposes(reading: Reading, codings: Any, canon: Canon) -> list[str]:
    path = "Consent.provision.purpose"
    own: list[str] = []
    standard: list[str] = []
    for index, coding in enumerate(_list(reading, codings, path)):
        system, code = (
            (coding.get("system"), coding.get("code")) if isinstance(coding, dict) else (None, None)
        )
        if system == canon.code_system("purpose") and isinstance(code, str):
            own.append(code)
        elif system == ACT_REASON and isinstance(code, str) and purpose_from_standard(code):
            standard.append(str(purpose_from_standard(code)))
        else:
            reading.refuse(f"{path}[{index}]", f"A code of {canon.code_system('purpose')}.")
    # A standard code beside the service's own repeats it; alone, it stands for it.
    if own and not set(standard) <= set(own):
        reading.refuse(path, "The standard codes do not match the service's purpose codes.")
    return own or list(dict.fromkeys(standard))


def _read_categories(reading: Reading, concepts: Any, canon: Canon) -> list[str]:
    path = "Consent.provision.code"
    system = canon.code_system("data-category")
    categories = []
    for index, concept in enumerate(_list(reading, concepts, path)):
        codes = [
            coding.get("code")
            for coding in (concept.get("coding", []) if isinstance(concept, dict) else [])
            if isinstance(coding, dict) and coding.get("system") == system
        ]
        if len(codes) != 1 or not isinstance(codes[0], str):
            reading.refuse(f"{path}[{index}]", f"One code of {system}.")
        else:
            categories.append(codes[0])
    return categories


def _read_collection(reading: Reading, resource: dict[str, Any], canon: Canon) -> None:
    collection = reading.body.setdefault("collection", {"method": "partner-api"})
    collection.setdefault("evidence_ref", None)
    collection["policy_version"] = None
    prefix = canon.policy_uri("")
    for index, policy in enumerate(_list(reading, resource.get("policy", []), "Consent.policy")):
        uri = policy.get("uri") if isinstance(policy, dict) else None
        if (
            index > 0
            or not isinstance(uri, str)
            or not uri.startswith(prefix)
            or set(policy) != {"uri"}
        ):
            reading.refuse(
                f"Consent.policy[{index}]", f"One policy, its uri {prefix}<text version>."
            )
        else:
            collection["policy_version"] = uri[len(prefix) :]
    rule = resource.get("policyRule")
    expected = POLICY_RULES.get(str(reading.body.get("decision")))
    if rule is not None and expected is not None:
        _expect_coding(reading, rule, "Consent.policyRule", {"system": ACT_CODE, "code": expected})
    attachment = resource.get("sourceAttachment")
    if attachment is not None:
        if not isinstance(attachment, dict) or set(attachment) != {"title"}:
            reading.refuse(
                "Consent.sourceAttachment", "Only a title: the reference of the evidence."
            )
        else:
            collection["evidence_ref"] = attachment["title"]


def _read_extensions(reading: Reading, extensions: Any, canon: Canon) -> None:
    for index, extension in enumerate(_list(reading, extensions, "Consent.extension")):
        url = extension.get("url") if isinstance(extension, dict) else None
        path = f"Consent.extension[{index}]"
        if url == canon.extension("collection-method"):
            reading.body["collection"] = {"method": extension.get("valueCode")}
        elif url == canon.extension("consent-status"):
            if extension.get("valueCode") != "active":
                reading.refuse(path, "Only an active consent can be recorded.")
        else:
            reading.refuse(path, "An extension this service does not know.")


def _read_category(reading: Reading, categories: Any) -> None:
    codings = [
        coding
        for concept in _list(reading, categories, "Consent.category")
        if isinstance(concept, dict)
        for coding in concept.get("coding", [])
    ]
    if not any(_same_code(coding, CONSENT_CATEGORY) for coding in codings):
        reading.refuse("Consent.category", f"The consent category {LOINC}#59284-0.")


def _read_identifier(
    reading: Reading, reference: Any, path: str, kind: str, system: str
) -> str | None:
    if not isinstance(reference, dict):
        reading.refuse(path, f"A reference to the {kind.lower()}.")
        return None
    identifier = reference.get("identifier")
    literal = reference.get("reference")
    if isinstance(identifier, dict) and identifier.get("system") == system:
        value = identifier.get("value")
    elif isinstance(literal, str) and literal.startswith(f"{kind}/"):
        value = literal[len(kind) + 1 :]
    else:
        reading.refuse(path, f"{kind}/<id>, or an identifier of {system}.")
        return None
    if not isinstance(value, str):
        reading.refuse(path, "The identifier's value must be a string.")
        return None
    return value


def _expect_coding(reading: Reading, concept: Any, path: str, expected: dict[str, str]) -> None:
    codings = concept.get("coding", []) if isinstance(concept, dict) else None
    if not isinstance(codings, list) or not any(_same_code(c, expected) for c in codings):
        reading.refuse(path, f"{expected['system']}#{expected['code']}.")


def _same_code(coding: Any, expected: dict[str, str]) -> bool:
    return (
        isinstance(coding, dict)
        and coding.get("system") == expected["system"]
        and coding.get("code") == expected["code"]
    )


def _list(reading: Reading, value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        reading.refuse(path, "Must be a list.")
        return []
    return value
