"""``"verification": "code"``: a code shown once, asked before anything, five misses lock."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from consent_service.audit import writer as audit_writer
from consent_service.db.audit_models import AuditEntry
from consent_service.db.models import OutboxEvent
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from tests.web.conftest import forms, local, request_body


def _create(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any] | None = None, **headers: str
) -> Any:
    return client.post(
        "/v1/consent-requests",
        json=body or request_body(verification="code"),
        headers={**auth, **headers},
    )


def _code_form(client: FlaskClient, form_url: str) -> tuple[str, Any]:
    page = client.get(local(form_url))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    (form,) = forms(html)
    return html, form


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_the_code_is_shown_once_and_stored_hashed(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    body = request_body(verification="code")
    response = _create(client, auth, body, **{"Idempotency-Key": "verification-once"})
    assert response.status_code == 201
    created = response.get_json()
    code = created["verification_code"]
    assert len(code) == 6 and code.isdigit() and created["verification"] == "code"
    read = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert "verification_code" not in read and read["verification"] == "code"
    replay = _create(client, auth, body, **{"Idempotency-Key": "verification-once"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "verification_code" not in replay.get_json()
    with database.reading() as session:
        stored = session.get(ConsentRequest, created["id"])
        assert stored is not None and stored.verification_code_hash not in (None, code)
        assert code not in repr(session.execute(select(ConsentRequest.__table__)).all())


def test_the_form_asks_for_the_code_before_showing_anything(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = _create(client, auth).get_json()
    html, form = _code_form(client, created["form_url"])
    for hidden in ("Camille Martin", "Orthodontiste", "Cabinet dentaire", "rpps:", "radio"):
        assert hidden not in html
    assert form.action.endswith("/consent/request/code") and "code" in form.fields

    # An answer that skips the code changes nothing.
    shown = client.post(form.action, data=form.submission(code=created["verification_code"]))
    assert shown.status_code == 200
    (answer_form,) = forms(shown.get_data(as_text=True))
    skipped = answer_form.submission(answer="grant")
    del skipped["v"]
    assert client.post(answer_form.action, data=skipped).status_code == 403

    granted = client.post(answer_form.action, data=answer_form.submission(answer="grant"))
    assert granted.status_code == 200, granted.get_data(as_text=True)
    read = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert read["status"] == "granted"
    consent = client.get(f"/v1/consents/{read['consent_id']}", headers=auth).get_json()
    assert consent["collection"]["evidence_ref"].endswith(";second-channel-code:checked")
    with database.reading() as session:
        stored = session.get(ConsentRequest, created["id"])
        assert stored is not None and stored.verification_checked_at is not None


def test_five_wrong_codes_lock_the_request_with_an_audit_entry_and_no_event(
    client: FlaskClient, auth: dict[str, str], database: Database
) -> None:
    created = _create(client, auth).get_json()
    code = created["verification_code"]
    _, form = _code_form(client, created["form_url"])
    for left in (4, 3, 2, 1):
        tried = client.post(form.action, data=form.submission(code=_wrong(code)))
        assert tried.status_code == 400
        assert f": {left}." in tried.get_data(as_text=True)
    assert client.post(form.action, data=form.submission(code="12ab56")).status_code == 403

    read = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert read["status"] == "locked" and read["form_url"] is None
    # Locked for good: the right code, the link, an answer all meet the locked page.
    assert client.post(form.action, data=form.submission(code=code)).status_code == 403
    assert client.get(local(created["form_url"])).status_code == 403
    audit_writer.flush(timeout=10)
    with database.reading() as session:
        locks = session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "consent-request.locked")
        )
        events = session.scalar(select(func.count()).select_from(OutboxEvent))
    assert (locks, events) == (1, 0)
