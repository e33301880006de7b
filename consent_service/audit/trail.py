"""Which API requests append to the audit log, and with which ids.

Reads, decisions, refused accesses (401, 403, 404) and writes that changed
nothing (a conflict, a replay) are recorded here, after the view answered:
handed to the process's batch writer (``audit.writer``), which appends
them a few milliseconds later on a connection of its own; with
``CONSENT_AUDIT_BATCH_MS=0``, or when the writer has too many waiting,
appended in the request. Writes that recorded a consent version were already
audited inside their own transaction (``audit``), so they are not
appended twice. Refused keys are not recorded one by one but summed up per
source and window (``audit.refusals``).

A read whose audit entry cannot be written in the request is not answered:
the caller gets 503 instead of consent data that nobody could later account
for.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import weakref
from typing import Any

from flask import Response, g, request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

from consent_service import audit
from consent_service.audit import refusals
from consent_service.audit.writer import BatchWriter
from consent_service.db.session import Database, make_engine, postgres_connect_args
from consent_service.http.context import ServiceState, state
from consent_service.http.problems import problem
from consent_service.services.clients import AuthResult
from consent_service.services.identifiers import IDENTIFIER
from consent_service.timefmt import utcnow

log = logging.getLogger(__name__)

ACTIONS = {
    "consents.create_consent": "consent.create",
    "consents.list_consents": "consent.list",
    "consents.get_consent": "consent.read",
    "consents.amend_consent": "consent.amend",
    "consents.revoke_consent": "consent.revoke",
    "consents.list_versions": "consent.versions",
    "consents.get_version": "consent.version",
    "consents.revoke_practitioner": "practitioner.revoke-all",
    "consents.export_patient": "patient.export",
    "decisions.decide": "decision",
    "decisions.decide_batch": "decision",
    "events.list_events": "events.read",
    "audit.list_audit": "audit.read",
    "consent_requests.create_consent_request": "consent-request.create",
    "consent_requests.get_consent_request": "consent-request.read",
    "subscribers.record_acks": "subscriber.acks",
    "subscribers.get_enforcement": "consent.enforcement",
    "subscribers.list_subscribers": "subscribers.list",
    "emergency_access.open_emergency_access": "emergency-access.open",
    "emergency_access.end_emergency_access": "emergency-access.end",
    "emergency_access.list_emergency_accesses": "emergency-access.list",
    "fhir.read_consent": "consent.read",
    "fhir.vread_consent": "consent.version",
    "fhir.consent_history": "consent.versions",
    "fhir.search_consents": "consent.list",
    "fhir.create_consent": "consent.create",
    "fhir.export_patient": "patient.export",
}
AUDITED_PREFIXES = ("/v1/", "/fhir/r4/")
# On these routes a body's ``id`` names a consent request, not a consent.
CONSENT_REQUEST_ENDPOINTS = frozenset(
    {"consent_requests.create_consent_request", "consent_requests.get_consent_request"}
)
OUTCOMES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    412: "stale",
    428: "precondition-required",
}
ID_FIELDS = ("consent_id", "patient_id", "practitioner_id")
# A flood of these must not become a flood of audit writes; the JSON access
# log still records them.
NOT_AUDITED = {405, 415, 429}


def begin_request() -> None:
    """Start the request's audit context (who is known once the key is checked)."""
    audit.current_context.set(audit.Context(request_id=g.get("request_id")))
    audit.versions_audited.set([])


def record_request(response: Response) -> Response:
    """Append this request's audit entries; 503 if a read cannot be accounted for."""
    if request.endpoint is None or not request.path.startswith(AUDITED_PREFIXES):
        return response
    result: AuthResult | None = g.get("auth_result")
    if result is not None and result.failure and g.get("principal") is None:
        _count_refused_key(state(), result)
        return response
    if response.status_code in NOT_AUDITED or response.status_code >= 500:
        return response
    principal = g.get("principal")
    if principal is None and response.status_code not in (401, 403):
        return response
    if 200 <= response.status_code < 300 and audit.versions_audited.get():
        return response  # audited in the write's own transaction
    records = _records(response)
    try:
        _append(state(), records)
    except SQLAlchemyError:
        log.exception("audit append failed request_id=%s", g.get("request_id"))
        if 200 <= response.status_code < 300:
            return problem(
                503, "Service Unavailable", "The access could not be recorded; try again."
            )
    return response


def _count_refused_key(service: ServiceState, result: AuthResult) -> None:
    def sink(records: list[audit.Record]) -> None:
        try:
            _append(service, records)
        except SQLAlchemyError:
            log.exception("audit append of %d refused-key entries failed", len(records))

    source = refusals.Source(
        address=_address(request.remote_addr),
        reason=str(result.failure),
        client_id=result.client_id,
        organization=result.organization,
    )
    tally = refusals.tally(service.database, sink)
    tally.count(source, request_id=g.get("request_id"), now=utcnow())


def _append(service: ServiceState, records: list[audit.Record]) -> None:
    """Hand the entries to the batch writer; append them here if batching is off or full."""
    writer = batch_writer(service.database, service.settings.audit_batch_ms)
    if writer is not None and writer.submit(records):
        return
    with audit_engine(service.database).connect() as connection:
        audit.append(connection, records, now=utcnow())


def batch_writer(database: Database, batch_ms: int) -> BatchWriter | None:
    """This process's writer of ``database``'s audit entries; None when batching is off.

    A writer found in the registry but made by another process (a fork's
    parent) is replaced: its queue and thread are the parent's.
    """
    if batch_ms == 0:
        return None
    writer = _WRITERS.get(database)
    if writer is None or writer.pid != os.getpid():
        with _WRITERS_LOCK:
            writer = _WRITERS.get(database)
            if writer is None or writer.pid != os.getpid():
                writer = BatchWriter(audit_engine(database), window_ms=batch_ms)
                _WRITERS[database] = writer
    return writer


def audit_engine(database: Database) -> Engine:
    """The engine of read and decision audit appends: commits that do not wait for the disk.

    A synchronous commit costs a disk flush (3-5 ms here), more than the
    decision it records. These entries are committed without waiting for the
    flush (PostgreSQL ``synchronous_commit=off``, SQLite ``synchronous=NORMAL``
    in WAL mode): an application crash loses none; a database or machine
    crash can lose the last fraction of a second of them, which ``audit
    verify`` then reports as a truncated chain. Writes' entries are not
    concerned: they commit, durably, with the write.
    """
    found = _AUDIT_ENGINES.get(database)
    if found is None:
        engine = _make_audit_engine(database.url)
    else:
        pid, engine = found
        if pid == os.getpid():
            return engine
        # A forked child must not use its parent's pooled connections; the
        # parent still owns them, so they are forgotten, not closed.
        engine.dispose(close=False)
    _AUDIT_ENGINES[database] = (os.getpid(), engine)
    return engine


def release(database: Database, timeout: float = 10.0) -> None:
    """Close what the audit trail holds for ``database``, once its entries are appended.

    For an app that ends before its process (tests, short-lived tools): the
    refusal tally's open windows and the batch writer's queue are appended,
    the tally's timer stopped, and the audit engine's pooled connections
    closed, rather than left open until the objects are garbage collected.
    """
    refusals.release(database)
    writer = _WRITERS.pop(database, None)
    if writer is not None:
        writer.flush(timeout)
    found = _AUDIT_ENGINES.pop(database, None)
    if found is not None and found[0] == os.getpid():
        found[1].dispose()


def _make_audit_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = make_engine(url)

        @event.listens_for(engine, "connect")
        def no_flush_wait(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=8,
        pool_timeout=5,
        connect_args=postgres_connect_args("synchronous_commit=off"),
    )


_AUDIT_ENGINES: weakref.WeakKeyDictionary[Database, tuple[int, Engine]] = (
    weakref.WeakKeyDictionary()
)
_WRITERS: weakref.WeakKeyDictionary[Database, BatchWriter] = weakref.WeakKeyDictionary()
_WRITERS_LOCK = threading.Lock()


def _records(response: Response) -> list[audit.Record]:
    endpoint = request.endpoint or ""
    action = ACTIONS.get(endpoint, endpoint.replace("_", "-")[:48])
    status = response.status_code
    # The entry's time is the request's, however late the writer appends it.
    who = {**_who(), "occurred_at": utcnow()}
    if action == "decision" and status == 200:
        return [
            audit.Record(action, outcome, status, objects, **who)
            for outcome, objects in _decisions(response)
        ]
    outcome = "ok" if 200 <= status < 300 else OUTCOMES.get(status, "invalid")
    return [audit.Record(action, outcome, status, _objects(response), **who)]


def _who() -> dict[str, Any]:
    principal = g.get("principal")
    result: AuthResult | None = g.get("auth_result")
    if principal is not None:
        client_id, organization = principal.client_id, principal.organization
    elif result is not None:
        client_id, organization = result.client_id, result.organization
    else:
        client_id = organization = None
    return {"client_id": client_id, "organization": organization, "request_id": g.get("request_id")}


def _objects(response: Response) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    for source in (request.view_args or {}, request.args):
        for name in ID_FIELDS:
            if name in source:
                objects[name] = _identifier(str(source[name]))
    if request.view_args and "number" in request.view_args:
        objects["version"] = request.view_args["number"]
    if request.view_args and "access_id" in request.view_args:
        objects["emergency_access_id"] = _identifier(str(request.view_args["access_id"]))
    if request.view_args and "request_id" in request.view_args:
        objects["consent_request_id"] = _identifier(str(request.view_args["request_id"]))
    result: AuthResult | None = g.get("auth_result")
    if result is not None and result.failure:
        objects["key"] = result.failure
    objects.update(_token_caller())
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and response.status_code < 300:
        if request.endpoint in CONSENT_REQUEST_ENDPOINTS:
            objects["consent_request_id"] = _identifier(str(body.get("id")))
            if isinstance(body.get("consent_id"), str):
                objects["consent_id"] = _identifier(body["consent_id"])
        elif isinstance(body.get("id"), str):
            objects["consent_id"] = _identifier(body["id"])
        if isinstance(body.get("version"), int):
            objects["version"] = body["version"]
        if isinstance(body.get("items"), list):
            objects["count"] = len(body["items"])
        if isinstance(body.get("revoked"), list):
            objects["count"] = len(body["revoked"])
    return objects


def _token_caller() -> dict[str, str]:
    """A token's caller has no client row: its entries name the subject themselves.

    And the practitioner a practitioner's token acts as, when it carries one.
    """
    principal = g.get("principal")
    if principal is None or principal.token_subject is None:
        return {}
    named = {"actor": principal.actor}
    if principal.practitioner_id is not None:
        named["acting_practitioner_id"] = principal.practitioner_id
    return named


def _decisions(response: Response) -> list[tuple[str, dict[str, Any]]]:
    asked = request.get_json(silent=True) or {}
    answered = response.get_json(silent=True) or {}
    questions = asked.get("checks", [asked]) if isinstance(asked, dict) else []
    answers = answered.get("results", [answered]) if isinstance(answered, dict) else []
    entries = []
    for question, answer in zip(questions, answers, strict=False):
        objects = {name: _identifier(str(question.get(name, ""))) for name in ID_FIELDS[1:]}
        objects.update(
            category=_identifier(str(question.get("category", ""))),
            purpose=_identifier(str(question.get("purpose", ""))),
            consent_id=answer.get("consent_id"),
            version=answer.get("version"),
        )
        if answer.get("emergency_access_id"):
            # The use of an emergency access: this decision permitted because of it.
            objects["emergency_access_id"] = answer["emergency_access_id"]
        if question.get("at"):
            objects["at"] = _identifier(str(question["at"]))
        objects.update(_token_caller())
        entries.append((str(answer.get("decision", "deny")), objects))
    return entries


def _address(value: str | None) -> str:
    """The client's IP address, normalised; anything else is not stored."""
    try:
        return str(ipaddress.ip_address(value or ""))
    except ValueError:
        return "<invalid>"


def _identifier(value: str) -> str:
    """Ids only: anything that is not shaped like an id is not stored."""
    return value if IDENTIFIER.fullmatch(value) else "<invalid>"
