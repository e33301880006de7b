"""The FHIR R4 face (``/fhir/r4``): Consent read, vread, history, search, create; export.

The same API keys, scopes, organizations, rate limits and audit entries as
``/v1``, over the same services. Every error leaves as an OperationOutcome
with the status ``/v1`` would have answered (see ``as_operation_outcome``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, Response, current_app, json, request
from marshmallow import ValidationError
from sqlalchemy.orm import Session
from werkzeug.http import http_date

from consent_service.api.schemas import ConsentCreateSchema, validate_identifier
from consent_service.fhir.mapping import RPPS_PREFIX, from_resource, to_resource
from consent_service.fhir.resources import (
    FHIR_JSON,
    bundle,
    capability_statement,
    operation_outcome,
)
from consent_service.fhir.terminology import CODE_SYSTEM_TITLES, RPPS_SYSTEM, Canon, code_system
from consent_service.http.auth import requires
from consent_service.http.context import actor, principal, state
from consent_service.http.problems import PROBLEM_JSON
from consent_service.http.writes import Answer, write
from consent_service.services import consents as service
from consent_service.services.cursors import decode_cursor, encode_cursor
from consent_service.timefmt import format_instant, utcnow

blp = Blueprint("fhir", __name__, url_prefix="/fhir/r4")
ACCEPTED_FORMATS = {"json", FHIR_JSON, "application/json"}
SEARCH_PARAMS = {"patient", "actor", "status", "_lastUpdated", "_count", "_page", "_format"}
DEFAULT_COUNT, MAX_COUNT = 20, 100
STATUSES = {"active": ("active",), "inactive": ("revoked", "expired")}
# Where a v1 field of a posted consent sits in the FHIR resource.
FIELD_PATHS = {
    "patient_id": "Consent.patient",
    "practitioner_id": "Consent.provision.actor[0]",
    "categories": "Consent.provision.code",
    "purposes": "Consent.provision.purpose",
    "decision": "Consent.provision.type",
    "valid_from": "Consent.provision.period.start",
    "valid_until": "Consent.provision.period.end",
    "collection.method": "Consent.extension",
    "collection.evidence_ref": "Consent.sourceAttachment.title",
    "collection.policy_version": "Consent.policy[0].uri",
}
_create_schema = ConsentCreateSchema()


class Refused(Exception):
    """A request the FHIR face answers with an OperationOutcome."""

    def __init__(self, status: int, detail: str, issues: list[tuple[str, str]] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.issues = status, detail, issues


@blp.errorhandler(Refused)
def _refused(error: Refused) -> Response:
    return fhir_response(operation_outcome(error.status, error.detail, error.issues), error.status)


@blp.before_request
def _negotiate() -> Response | None:
    wanted = request.args.get("_format") or _accepted_type()
    if wanted is not None and wanted not in ACCEPTED_FORMATS:
        return fhir_response(operation_outcome(406, "This server speaks FHIR JSON only."), 406)
    return None


def _accepted_type() -> str | None:
    if not request.accept_mimetypes.provided:
        return None
    best = request.accept_mimetypes.best_match([FHIR_JSON, "application/json"])
    return best or request.accept_mimetypes.to_header()


def as_operation_outcome(response: Response) -> Response:
    """Turn the shared machinery's problem+json answers (401, 403, 404, 429, 503...) into FHIR.

    Registered on the app, not the blueprint: a path that matches no FHIR
    route (a malformed id, a wrong method) has no blueprint, but must still
    answer FHIR. Consent data is never cached, whatever its media type.
    """
    if not request.path.startswith(blp.url_prefix or "/fhir/"):
        return response
    response.headers["Cache-Control"] = "no-store"
    if response.mimetype != PROBLEM_JSON:
        return response
    body = response.get_json(silent=True) or {}
    detail = str(body.get("detail") or body.get("title") or "Refused.")
    response.set_data(json.dumps(operation_outcome(response.status_code, detail)))
    response.mimetype = FHIR_JSON
    return response


def fhir_response(
    resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    response = current_app.response_class(json.dumps(resource), status=status, mimetype=FHIR_JSON)
    response.headers.update(headers or {})
    return response


def canon() -> Canon:
    """Canonical URLs on the configured public address, else the one the request came to."""
    root = state().settings.public_url or request.url_root.rstrip("/")
    return Canon(f"{root}/fhir/r4")


@blp.route("/metadata", methods=["GET"])
def metadata() -> Response:
    """The CapabilityStatement (no key needed)."""
    return fhir_response(capability_statement(canon(), format_instant(utcnow())))


@blp.route("/CodeSystem/<name>", methods=["GET"])
def read_code_system(name: str) -> Response:
    """One of the service's vocabularies (no key needed)."""
    if name not in CODE_SYSTEM_TITLES:
        raise Refused(404, f"No CodeSystem {name!r} here; see the CapabilityStatement.")
    return fhir_response(code_system(state().settings, canon(), name))


@blp.route("/Consent/<uuid(strict=False):consent_id>", methods=["GET"])
@requires("consents:read")
def read_consent(consent_id: uuid.UUID) -> Response:
    """The current version of a consent."""
    with state().database.reading() as session:
        current = service.get_consent(
            session, organization=principal().organization, consent_id=str(consent_id)
        )
    return _resource_response(current)


@blp.route("/Consent/<uuid(strict=False):consent_id>/_history/<int:number>", methods=["GET"])
@requires("consents:read")
def vread_consent(consent_id: uuid.UUID, number: int) -> Response:
    """One version of a consent."""
    with state().database.reading() as session:
        version = service.get_version(
            session,
            organization=principal().organization,
            consent_id=str(consent_id),
            number=number,
        )
    return _resource_response(version)


@blp.route("/Consent/<uuid(strict=False):consent_id>/_history", methods=["GET"])
@requires("consents:read")
def consent_history(consent_id: uuid.UUID) -> Response:
    """Every version of a consent, newest first (a history Bundle)."""
    with state().database.reading() as session:
        versions = service.list_versions(
            session, organization=principal().organization, consent_id=str(consent_id)
        )
    resources = [to_resource(version, canon()) for version in reversed(versions)]
    return fhir_response(bundle("history", resources, canon()))


@blp.route("/Patient/<path:patient_id>/$consent-export", methods=["GET"])
@requires("consents:read")
def export_patient(patient_id: str) -> Response:
    """Every consent of a patient with every version (a collection Bundle)."""
    _check_identifier(patient_id, "Patient.id")
    with state().database.reading() as session:
        exported = service.export_patient(
            session, organization=principal().organization, patient_id=patient_id
        )
    resources = [
        to_resource(version, canon()) for consent in exported for version in consent["versions"]
    ]
    return fhir_response(bundle("collection", resources, canon()))


@blp.route("/Consent", methods=["GET"])
@requires("consents:read")
def search_consents() -> Response:
    """Search consents by patient, actor, status and last update, by pages."""
    filters, count, after = _search_arguments(request.args)
    with state().database.reading() as session:
        page, resume = service.list_consents(
            session, organization=principal().organization, limit=count, after=after, **filters
        )
    links = {"self": request.url}
    cursor = encode_cursor(resume)
    if cursor is not None:
        query = [(k, v) for k, v in parse_qsl(request.query_string.decode()) if k != "_page"]
        links["next"] = f"{canon().base}/Consent?{urlencode([*query, ('_page', cursor)])}"
    resources = [to_resource(consent, canon()) for consent in page]
    return fhir_response(bundle("searchset", resources, canon(), links))


@blp.route("/Consent", methods=["POST"])
@requires("consents:write")
def create_consent() -> Response:
    """Record a consent from a FHIR Consent (conditional with If-None-Exist)."""
    if request.mimetype not in ACCEPTED_FORMATS:
        raise Refused(415, f"Send {FHIR_JSON}.")
    body = _create_body(request.get_json(silent=True))
    condition = request.headers.get("If-None-Exist")
    if condition is not None:
        existing = _existing(condition)
        if existing is not None:
            return _resource_response(existing)
    now = utcnow()

    def compute(session: Session) -> Answer:
        created = service.grant_consent(session, actor=actor(), now=now, reason=None, **body)
        resource = to_resource(created, canon())
        headers = {
            "Location": f"{canon().base}/Consent/{created['id']}/_history/1",
            "ETag": 'W/"1"',
            "Last-Modified": _http_date(created["recorded_at"]),
        }
        return Answer(201, resource, headers)

    response = write(compute)
    response.mimetype = FHIR_JSON
    return response


def _create_body(resource: Any) -> dict[str, Any]:
    if resource is None:
        raise Refused(400, "The body is not JSON.")
    reading = from_resource(resource, canon(), principal().organization)
    if reading.issues:
        raise Refused(422, "This Consent cannot be recorded.", reading.issues)
    try:
        loaded: dict[str, Any] = _create_schema.load(reading.body)
    except ValidationError as error:
        raise Refused(422, "This Consent cannot be recorded.", _issues(error.messages)) from None
    loaded.pop("reason", None)
    return loaded


def _issues(messages: Any, prefix: str = "") -> list[tuple[str, str]]:
    """marshmallow's messages, one issue per field, at the field's place in the resource."""
    issues: list[tuple[str, str]] = []
    if isinstance(messages, dict):
        for name, inner in messages.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            if isinstance(name, int):
                path = prefix
            issues.extend(_issues(inner, path))
    elif isinstance(messages, list):
        for item in messages:
            if isinstance(item, str):
                issues.append((FIELD_PATHS.get(prefix, "Consent"), item))
            else:
                issues.extend(_issues(item, prefix))
    return issues


def _existing(condition: str) -> dict[str, Any] | None:
    """The one consent matching If-None-Exist; None when none; 412 when several."""
    filters, _, _ = _search_arguments(dict(parse_qsl(condition, keep_blank_values=True)))
    if not filters:
        raise Refused(400, "If-None-Exist: patient, actor or status search parameters.")
    with state().database.reading() as session:
        page, _ = service.list_consents(
            session, organization=principal().organization, limit=2, **filters
        )
    if len(page) > 1:
        raise Refused(412, "If-None-Exist matches more than one consent.")
    return page[0] if page else None


def _search_arguments(args: Any) -> tuple[dict[str, Any], int, tuple[datetime, str] | None]:
    unknown = sorted(set(args) - SEARCH_PARAMS)
    if unknown:
        raise Refused(400, f"Unknown search parameter(s): {', '.join(unknown)}.")
    filters: dict[str, Any] = {}
    if "patient" in args:
        patient = args["patient"].removeprefix("Patient/")
        filters["patient_id"] = _check_identifier(patient, "patient")
    if "actor" in args:
        filters["practitioner_id"] = _practitioner(args["actor"])
    if "status" in args:
        if args["status"] not in STATUSES:
            raise Refused(400, "status: active or inactive.")
        filters["status"] = STATUSES[args["status"]]
    if "_lastUpdated" in args:
        filters["updated"] = [_date_bound(value) for value in _all(args, "_lastUpdated")]
    count = _count(args.get("_count"))
    after: tuple[datetime, str] | None = None
    if "_page" in args:
        decoded = decode_cursor(args["_page"])
        if not isinstance(decoded, tuple):
            raise Refused(400, "_page: not a page this server issued.")
        after = decoded
    return filters, count, after


def _all(args: Any, name: str) -> list[str]:
    return list(args.getlist(name)) if hasattr(args, "getlist") else [args[name]]


def _practitioner(value: str) -> str:
    system, separator, code = value.partition("|")
    if not separator:
        return _check_identifier(value.removeprefix("Practitioner/"), "actor")
    if system == RPPS_SYSTEM:
        return _check_identifier(RPPS_PREFIX + code, "actor")
    if system == canon().identifier_system("practitioner-id"):
        return _check_identifier(code, "actor")
    raise Refused(400, f"actor: an RPPS number ({RPPS_SYSTEM}|<number>) or a practitioner id.")


def _date_bound(value: str) -> tuple[str, datetime]:
    operator, instant = value[:2], value[2:]
    if operator not in ("lt", "le", "gt", "ge", "eq"):
        operator, instant = "eq", value
    try:
        parsed = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, "_lastUpdated: a prefix (ge, gt, le, lt, eq) and an instant.") from None
    if parsed.tzinfo is None:
        raise Refused(400, "_lastUpdated: the instant needs a time zone (Z or +hh:mm).")
    return operator, parsed


def _count(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_COUNT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_COUNT):
        raise Refused(400, f"_count: a whole number from 1 to {MAX_COUNT}.")
    return int(raw)


def _check_identifier(value: str, where: str) -> str:
    try:
        validate_identifier(value)
    except ValidationError as error:
        raise Refused(400, f"{where}: {' '.join(map(str, error.messages))}") from None
    return value


def _resource_response(consent: dict[str, Any]) -> Response:
    version = str(consent["version"])
    return fhir_response(
        to_resource(consent, canon()),
        headers={"ETag": f'W/"{version}"', "Last-Modified": _http_date(consent["recorded_at"])},
    )


def _http_date(instant: str) -> str:
    return http_date(datetime.fromisoformat(instant.replace("Z", "+00:00")))
