"""The patient form: answer a consent request, see and withdraw one's consents.

Server-rendered pages that work without JavaScript. GET never changes
anything; every POST needs a CSRF token; every answer is an atomic state
change in ``services.requests``. Each failure is a page in the patient's
language saying what happened and what to do next, with the HTTP status a
machine would expect (400 tampered, 403 CSRF, 404 unknown, 409 already
answered, 410 expired, 429 too many attempts). What each page appends to the
audit log: ``audit.form_trail``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    render_template,
    request,
    url_for,
)
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from consent_service import wording
from consent_service.audit import form_trail as audit_trail
from consent_service.db.request_models import ConsentRequest
from consent_service.http.context import state
from consent_service.http.problems import DATABASE_RETRY_AFTER_S, database_unavailable
from consent_service.ratelimits import RATE_LIMITS_EXTENSION, RateLimits
from consent_service.services import links, policies
from consent_service.services import requests as service
from consent_service.services.emergency import list_emergency_accesses, wire
from consent_service.services.errors import Conflict, NotFound
from consent_service.timefmt import utcnow
from consent_service.web import code_check, i18n, presenting
from consent_service.web.csrf import csrf_is_valid, csrf_token, set_csrf_cookie
from consent_service.web.receipts_text import withdrawal_texts

log = logging.getLogger(__name__)

blp = Blueprint(
    "web",
    __name__,
    url_prefix="/consent",
    template_folder="templates",
    static_folder="static",
)

# No script at all, styles from this origin only, never framed, forms post
# only back here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class PatientError(Exception):
    """Stop and show the patient the ``kind`` error page with ``status``."""

    kind: str
    status: int
    manage_url: str | None = None
    back_url: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    # What the audit log records of it (``audit.form_trail``); None: nothing,
    # as for a bad form, a CSRF failure or a rate limit.
    audit_outcome: str | None = None
    retry_after: int | None = None


@blp.after_request
def _protect(response: Response) -> Response:
    set_csrf_cookie(response)
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


@blp.get("/request")
def answer_form() -> Response:
    """The consent request as the patient reads it, with agree and refuse buttons."""
    g.lang = _language()
    token = request.args.get("t")
    request_id = _verified(links.ANSWER, token)
    now = utcnow()
    with state().database.reading() as session:
        consent_request = _find(session, request_id)
        g.lang = _language(consent_request.language)
        _ensure_pending(consent_request, now)
        if consent_request.verification_code_hash:
            return _code_page(token, None)
        text = policies.current_policy_text(session, language=g.lang)
    return _show_form(consent_request, text, token, None)


@blp.post("/request/code")
def check_code() -> Response:
    """The second-channel code: a right one shows the form, the fifth wrong one locks."""
    g.lang = _language()
    _require_csrf()
    token = request.form.get("t")
    request_id = _verified(links.ANSWER, token)
    audit_trail.note(consent_request_id=request_id)
    try:
        result = code_check.check(
            state().database, _keys(), request_id, request.form.get("code", ""), utcnow()
        )
    except NotFound:
        raise PatientError("unknown", 404, audit_outcome=audit_trail.REFUSED) from None
    if result.kind == "locked":
        raise PatientError("locked", 403)
    if result.kind == "wrong":
        return _code_page(token, result.tries_left, status=400)
    with state().database.reading() as session:
        consent_request = _find(session, request_id)
        g.lang = _language(consent_request.language)
        _ensure_pending(consent_request, utcnow())
        text = policies.current_policy_text(session, language=g.lang)
    return _show_form(consent_request, text, token, code_check.proof(_keys(), request_id))


def _code_page(token: str | None, tries_left: int | None, status: int = 200) -> Response:
    """Asks for the code, and shows nothing of the request."""
    csrf = csrf_token(_keys())
    return _page("code.html", status, token=token, csrf=csrf, tries_left=tries_left)


def _show_form(
    consent_request: ConsentRequest, text: Any, token: str | None, code_proof: str | None
) -> Response:
    _record_read()
    return _page(
        "form.html",
        200,
        switch_url=None if code_proof else _switch_url(),
        req=consent_request,
        text=text,
        paragraphs=[part.strip() for part in text.body.split("\n\n") if part.strip()],
        token=token,
        code_proof=code_proof,
        csrf=csrf_token(_keys()),
        deadline=wording.format_moment(g.lang, consent_request.expires_at),
        duration=presenting.duration(g.lang, consent_request),
        categories=presenting.words(g.lang, wording.category_words, consent_request.categories),
        purposes=presenting.words(g.lang, wording.purpose_words, consent_request.purposes),
    )


@blp.post("/request")
def answer_submit() -> Response:
    """Record the patient's answer: grant (a consent and its event) or refuse."""
    g.lang = _language()
    _require_csrf()
    token = request.form.get("t")
    request_id = _verified(links.ANSWER, token)
    answer = request.form.get("answer")
    text_language = request.form.get("text_language", "")
    if answer not in ("grant", "refuse") or text_language not in service.LANGUAGES:
        raise PatientError("bad_form", 400)
    now = utcnow()
    audit_trail.note(consent_request_id=request_id)
    with state().database.transaction() as session:
        try:
            text = policies.get_policy_text(
                session, version=request.form.get("text_version", ""), language=text_language
            )
        except NotFound:
            raise PatientError("bad_form", 400) from None
        try:
            outcome = service.answer_request(
                session,
                request_id=request_id,
                grant=answer == "grant",
                text=text,
                now=now,
                code_checked=code_check.proven(_keys(), request_id, request.form.get("v")),
            )
        except NotFound:
            raise PatientError("unknown", 404, audit_outcome=audit_trail.REFUSED) from None
        audit_trail.note_request(outcome.request)
        if outcome.kind == "refused":
            audit_trail.stage(session, audit_trail.REFUSED_ANSWER, now=now)
    consent_request = outcome.request
    if outcome.kind == "expired":
        raise PatientError("expired", 410, audit_outcome=audit_trail.REFUSED)
    if outcome.kind == "already-answered":
        raise _already_answered(consent_request, now)
    if outcome.kind in ("code-required", "locked"):
        raise PatientError(outcome.kind, 403, audit_outcome=audit_trail.REFUSED)
    log.info("consent request %s answered: %s", consent_request.id, outcome.kind)
    return _page(
        "answered.html",
        200,
        req=consent_request,
        granted=outcome.kind == "granted",
        manage_url=_manage_url(consent_request),
        manage_days=links.MAX_AGE[links.MANAGE].days,
    )


@blp.get("/mine")
def my_consents() -> Response:
    """The patient's consents in this organization, each with a withdraw button."""
    g.lang = _language()
    token = request.args.get("t")
    request_id = _verified(links.MANAGE, token)
    with state().database.reading() as session:
        consent_request = _find(session, request_id)
        g.lang = _language(consent_request.language)
        consents = service.patient_consents(
            session,
            organization=consent_request.organization,
            patient_id=consent_request.patient_id,
        )
        accesses = list_emergency_accesses(
            session,
            organization=consent_request.organization,
            patient_id=consent_request.patient_id,
        )
        names = service.practitioner_names(
            session,
            organization=consent_request.organization,
            practitioner_ids=[consent["practitioner_id"] for consent in consents]
            + [access.practitioner_id for access in accesses],
        )
        receipts = withdrawal_texts(
            session, organization=consent_request.organization, consents=consents, language=g.lang
        )
    shown_accesses = {"emergency_access_ids": [access.id for access in accesses]}
    _record_read(
        consent_ids=[consent["id"] for consent in consents],
        count=len(consents),
        **(shown_accesses if accesses else {}),
    )
    now = utcnow()
    return _page(
        "mine.html",
        200,
        switch_url=_switch_url(),
        req=consent_request,
        token=token,
        csrf=csrf_token(_keys()) if consents else None,
        items=[presenting.consent_view(g.lang, consent, names) for consent in consents],
        receipts=receipts,
        emergencies=[
            presenting.emergency_view(g.lang, wire(access, now), names) for access in accesses
        ],
    )


@blp.post("/mine")
def withdraw() -> Response:
    """Withdraw one consent: a revoke by the patient, with its new version and event."""
    g.lang = _language()
    _require_csrf()
    token = request.form.get("t")
    request_id = _verified(links.MANAGE, token)
    back_url = url_for("web.my_consents", t=token, lang=g.lang)
    try:
        consent_id = str(uuid.UUID(request.form.get("consent_id", "")))
    except ValueError:
        raise PatientError("bad_form", 400, back_url=back_url) from None
    audit_trail.note(consent_id=consent_id)
    now = utcnow()
    try:
        with state().database.transaction() as session:
            consent_request = _find(session, request_id)
            revoked = service.withdraw_consent(
                session,
                organization=consent_request.organization,
                patient_id=consent_request.patient_id,
                consent_id=consent_id,
                now=now,
            )
            names = service.practitioner_names(
                session,
                organization=consent_request.organization,
                practitioner_ids=[revoked["practitioner_id"]],
            )
    except Conflict:
        outcome = audit_trail.CONFLICT
        raise PatientError("not_active", 409, back_url=back_url, audit_outcome=outcome) from None
    except NotFound:
        outcome = audit_trail.NOT_FOUND
        raise PatientError("unknown", 404, back_url=back_url, audit_outcome=outcome) from None
    log.info("consent %s withdrawn by the patient", consent_id)
    return _page(
        "withdrawn.html",
        200,
        item=presenting.consent_view(g.lang, revoked, names),
        back_url=back_url,
    )


@blp.route("/<path:_unknown>", methods=["GET", "POST"])
def not_found(_unknown: str) -> Response:
    """Any other address under /consent: a page, not a JSON problem."""
    g.lang = _language()
    raise PatientError("unknown", 404)


@blp.errorhandler(PatientError)
def _patient_error(error: PatientError) -> Response:
    # Recorded here, once any transaction of the view has ended: on SQLite an
    # append from inside a write transaction would wait for that very lock.
    if error.audit_outcome is not None:
        why = {"link": error.kind} if error.audit_outcome == audit_trail.REFUSED else {}
        audit_trail.record_refusal(error.audit_outcome, error.status, **why)
    response = _page(
        "error.html",
        error.status,
        switch_url=_switch_url() if request.method == "GET" else None,
        kind=error.kind,
        manage_url=error.manage_url,
        manage_days=links.MAX_AGE[links.MANAGE].days,
        back_url=error.back_url,
        values=error.values,
    )
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@blp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    # Oversized or unparsable form bodies, unexpected methods: still a page.
    status = error.code or 400
    kind = "unknown" if status == 404 else "server" if status >= 500 else "bad_form"
    return _patient_error(PatientError(kind, status))


@blp.errorhandler(SQLAlchemyError)
def _database_error(error: SQLAlchemyError) -> Response:
    # A database outage is a 503 page the patient can retry, as on the API; never a 500.
    if not database_unavailable(error):
        return _unexpected(error)
    log.warning(
        "database unavailable request_id=%s error=%s", g.get("request_id"), type(error).__name__
    )
    return _patient_error(PatientError("server", 503, retry_after=DATABASE_RETRY_AFTER_S))


@blp.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    log.exception("web form failure request_id=%s", g.get("request_id"))
    return _patient_error(PatientError("server", 500))


def _page(template: str, status: int, **context: Any) -> Response:
    lang = g.get("lang", service.DEFAULT_LANGUAGE)
    context.setdefault("switch_url", None)
    html = render_template(template, lang=lang, t=i18n.translator(lang), **context)
    return Response(html, status=status, mimetype="text/html")


def _keys() -> Sequence[str]:
    return state().settings.secret_keys


def _client() -> str:
    return request.remote_addr or "unknown"


def _verified(purpose: str, token: str | None) -> str:
    """The request id of a link, after the per-address limit on link checks.

    Signatures cannot be guessed, but every check costs a lookup and an
    unthrottled endpoint invites scanning: the API's shared counters (seen by
    every worker and pod) give each address one ``links`` budget.
    """
    limits: RateLimits | None = current_app.extensions.get(RATE_LIMITS_EXTENSION)
    if limits is not None:
        verdict = limits.hit("links", _client(), "links")
        if not verdict.allowed:
            raise PatientError("rate", 429, retry_after=verdict.retry_after)
    try:
        return links.verify(_keys(), purpose, token)
    except links.LinkError as error:
        status = 410 if error.kind == "expired" else 400
        raise PatientError(error.kind, status, audit_outcome=audit_trail.REFUSED) from None


def _require_csrf() -> None:
    if not csrf_is_valid(_keys()):
        raise PatientError("csrf", 403)


def _language(known: str | None = None) -> str:
    """Explicit choice (``lang``), else the request's language, else the browser's, else fr."""
    chosen = request.values.get("lang")
    if chosen in service.LANGUAGES:
        return chosen
    if known in service.LANGUAGES:
        return known
    best = request.accept_languages.best_match(service.LANGUAGES)
    return best or service.DEFAULT_LANGUAGE


def _switch_url() -> str | None:
    """This page in the other language (GET pages only: the same link, another ``lang``)."""
    if request.method != "GET" or request.endpoint not in ("web.answer_form", "web.my_consents"):
        return None
    other = "en" if g.get("lang") == "fr" else "fr"
    return url_for(request.endpoint, t=request.args.get("t", ""), lang=other)


def _find(session: Any, request_id: str) -> ConsentRequest:
    audit_trail.note(consent_request_id=request_id)
    try:
        found = service.find_request(session, request_id=request_id)
    except NotFound:
        raise PatientError("unknown", 404, audit_outcome=audit_trail.REFUSED) from None
    audit_trail.note_request(found)
    return found


def _record_read(**ids: Any) -> None:
    """Audit the page about to be shown; no page without its entry."""
    try:
        audit_trail.record(audit_trail.OK, 200, **ids)
    except SQLAlchemyError:
        log.exception("audit append failed request_id=%s", g.get("request_id"))
        raise PatientError("server", 503) from None


def _ensure_pending(consent_request: ConsentRequest, now: datetime) -> None:
    status = service.effective_status(consent_request, now)
    if status in ("expired", "locked"):
        code = 410 if status == "expired" else 403
        raise PatientError(status, code, audit_outcome=audit_trail.REFUSED)
    if status != "pending":
        raise _already_answered(consent_request, now)


def _already_answered(consent_request: ConsentRequest, now: datetime) -> PatientError:
    """The "already answered" page; with a fresh manage link only until the request's deadline.

    An answer link lives as long as its request may be answered. Past that
    deadline, a leaked or forwarded answer link must not keep minting
    90-day links to the patient's consents: the patient uses the manage
    link given with their answer, or asks the practice for a new one.
    """
    t = i18n.translator(g.lang)
    answer = t("answer_granted" if consent_request.status == "granted" else "answer_refused")
    in_time = now < consent_request.expires_at
    return PatientError(
        "answered" if in_time else "answered_late",
        409,
        manage_url=_manage_url(consent_request) if in_time else None,
        values={"answer": answer},
        audit_outcome=audit_trail.CONFLICT,
    )


def _manage_url(consent_request: ConsentRequest) -> str:
    token = links.sign(_keys(), links.MANAGE, consent_request.id)
    return url_for("web.my_consents", t=token, lang=g.lang)
