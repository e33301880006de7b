"""Signed links (tampering, purpose, expiry, key rotation), CSRF, headers, language, limits."""

from __future__ import annotations

import logging
import types
import uuid
from urllib.parse import parse_qs, urlsplit

import itsdangerous.timed
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.models import Consent
from consent_service.db.request_models import ConsentRequest
from consent_service.db.session import Database
from consent_service.services import links
from consent_service.web.csrf import COOKIE_NAME
from tests.conftest import TEST_SECRET_KEYS
from tests.web.conftest import Ask, forms, local

OLD_KEY = TEST_SECRET_KEYS[0]
NEW_KEY = "rotated-signing-key-fedcba9876543210"


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


def _app(database: Database, keys: tuple[str, ...], rate_limits: str = "off") -> Flask:
    settings = Settings(database_url=database.url, secret_keys=keys, rate_limits=rate_limits)
    return create_app(settings, database=database)


def _pending(database: Database) -> bool:
    with database.reading() as session:
        statuses = session.scalars(select(ConsentRequest.status)).all()
        consents = session.scalar(select(func.count()).select_from(Consent))
    return set(statuses) == {"pending"} and consents == 0


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        lambda token: token[: len(token) // 2],
        lambda token: "x" + token,
        lambda token: "",
        lambda token: "a" * 600,
    ],
    ids=["signature", "truncated", "payload", "empty", "huge"],
)
def test_a_tampered_link_is_400_and_changes_nothing(
    client: FlaskClient, ask: Ask, database: Database, mangle: object
) -> None:
    created = ask()
    token = _token(created["form_url"])
    response = client.get("/consent/request", query_string={"t": mangle(token)})  # type: ignore[operator]
    assert response.status_code == 400
    assert "Ce lien n&#39;est pas valide" in response.get_data(as_text=True)
    assert _pending(database)


def test_each_link_works_for_its_purpose_only(client: FlaskClient, ask: Ask) -> None:
    created = ask()
    answer_token, manage_token = _token(created["form_url"]), _token(created["manage_url"])
    assert client.get("/consent/request", query_string={"t": manage_token}).status_code == 400
    assert client.get("/consent/mine", query_string={"t": answer_token}).status_code == 400
    assert client.get("/consent/request", query_string={"t": answer_token}).status_code == 200
    assert client.get("/consent/mine", query_string={"t": manage_token}).status_code == 200


def test_a_link_to_an_unknown_request_is_404(client: FlaskClient) -> None:
    token = links.sign(TEST_SECRET_KEYS, links.ANSWER, str(uuid.uuid4()))
    response = client.get("/consent/request", query_string={"t": token, "lang": "en"})
    assert response.status_code == 404
    assert "Request not found" in response.get_data(as_text=True)
    assert client.get("/consent/nowhere").status_code == 404


def test_a_link_older_than_its_purpose_allows_is_410(
    client: FlaskClient, ask: Ask, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = ask()
    long_ago = itsdangerous.timed.time.time() - links.MAX_AGE[links.ANSWER].total_seconds() - 60
    with monkeypatch.context() as patched:
        patched.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: long_ago))
        stale = links.sign(TEST_SECRET_KEYS, links.ANSWER, created["id"])
    response = client.get("/consent/request", query_string={"t": stale})
    assert response.status_code == 410
    assert "Ce lien a expiré" in response.get_data(as_text=True)


def test_links_signed_with_the_previous_key_work_until_it_is_removed(
    database: Database, ask: Ask
) -> None:
    created = ask()  # signed with OLD_KEY by the default test app
    rotated = _app(database, (NEW_KEY, OLD_KEY)).test_client()
    assert rotated.get(local(created["form_url"])).status_code == 200
    retired = _app(database, (NEW_KEY,)).test_client()
    assert retired.get(local(created["form_url"])).status_code == 400
    # Newly signed links use the newest key, which the rotated app also accepts.
    fresh = links.sign((NEW_KEY, OLD_KEY), links.ANSWER, created["id"])
    assert links.verify((NEW_KEY,), links.ANSWER, fresh) == created["id"]
    with pytest.raises(links.TamperedLink):
        links.verify((OLD_KEY,), links.ANSWER, fresh)


def test_post_without_a_valid_csrf_token_is_refused(
    app: Flask, ask: Ask, database: Database
) -> None:
    created = ask()
    browser = app.test_client()
    html = browser.get(local(created["form_url"])).get_data(as_text=True)
    (form,) = forms(html)
    without_field = {k: v for k, v in form.submission(answer="grant").items() if k != "csrf_token"}
    assert browser.post(form.action, data=without_field).status_code == 403
    forged = form.submission(answer="grant", csrf_token="forged")
    assert browser.post(form.action, data=forged).status_code == 403
    stranger = app.test_client()  # has the page's field but not its cookie
    response = stranger.post(form.action, data=form.submission(answer="grant"))
    assert response.status_code == 403
    assert "Le formulaire a expiré" in response.get_data(as_text=True)
    other = app.test_client()  # its own cookie, another browser's field
    other.get(local(created["form_url"]))
    assert other.post(form.action, data=form.submission(answer="grant")).status_code == 403
    assert _pending(database)
    assert browser.post(form.action, data=form.submission(answer="grant")).status_code == 200


def test_cookie_and_security_headers(client: FlaskClient, ask: Ask) -> None:
    created = ask()
    page = client.get(local(created["form_url"]))
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/consent"):
        assert attribute in cookie
    (form,) = forms(page.get_data(as_text=True))
    answered = client.post(form.action, data=form.submission(answer="refuse"))
    errors = [
        client.get("/consent/request?t=nope"),
        client.post(form.action, data={}),
        client.get("/consent/unknown"),
    ]
    for response in (page, answered, *errors):
        csp = response.headers["Content-Security-Policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in response.get_data(as_text=True)


def test_get_never_answers(client: FlaskClient, ask: Ask, database: Database) -> None:
    created = ask()
    for _ in range(3):
        assert client.get(local(created["form_url"]) + "&answer=grant").status_code == 200
    assert _pending(database)


def test_language_choice(client: FlaskClient, ask: Ask) -> None:
    french = client.get(local(ask()["form_url"])).get_data(as_text=True)
    assert '<html lang="fr">' in french and "Demande de consentement" in french
    english_request = ask(language="en")
    english = client.get(local(english_request["form_url"])).get_data(as_text=True)
    assert '<html lang="en">' in english and "I agree" in english
    assert "Consent to share health data" in english
    switched = client.get(local(english_request["form_url"]).replace("lang=en", "lang=fr"))
    assert "J&#39;accepte" in switched.get_data(as_text=True)
    error = client.get("/consent/request?t=bad", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert "This link is not valid" in error.get_data(as_text=True)
    default = client.get("/consent/request?t=bad", headers={"Accept-Language": "de"})
    assert '<html lang="fr">' in default.get_data(as_text=True)


def test_link_verification_is_rate_limited(database: Database, ask: Ask) -> None:
    created = ask()
    limited = _app(database, TEST_SECRET_KEYS, rate_limits="default").test_client()
    statuses = [limited.get(local(created["form_url"])).status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60
    assert statuses[60] == 429
    blocked = limited.get("/consent/request?t=anything")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1


def test_tokens_never_reach_the_logs(
    client: FlaskClient, ask: Ask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = ask()
    html = client.get(local(created["form_url"])).get_data(as_text=True)
    (form,) = forms(html)
    client.post(form.action, data=form.submission(answer="grant"))
    client.get(local(created["manage_url"]))
    client.get("/consent/request?t=" + _token(created["form_url"])[:-3])
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for token in (
        _token(created["form_url"]),
        _token(created["manage_url"]),
        form.fields["csrf_token"],
    ):
        assert token not in logged
    assert created["id"] in logged  # the flow was logged, by ids
