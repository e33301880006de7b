"""Security headers on every answer, request ids everywhere, JSON logs with ids only."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from consent_service.config import ConfigError, Settings
from consent_service.http.logs import JsonFormatter, RequestIdFilter
from tests.conftest import consent_body

SECURITY_HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options")


def _answers(client: FlaskClient, auth: dict[str, str]) -> dict[str, object]:
    created = client.post("/v1/consents", json=consent_body(), headers=auth)
    return {
        "201": created,
        "200": client.get(f"/v1/consents/{created.get_json()['id']}", headers=auth),
        "401": client.get("/v1/consents"),
        "404": client.get(f"/v1/consents/{uuid.uuid4()}", headers=auth),
        "404 route": client.get("/v1/nothing-here", headers=auth),
        "405": client.delete("/v1/consents", headers=auth),
        "415": client.post("/v1/consents", data="x", content_type="text/plain", headers=auth),
        "422": client.post("/v1/consents", json={"patient_id": "x"}, headers=auth),
        "400": client.post("/v1/consents", data="{", content_type="application/json", headers=auth),
        "healthz": client.get("/healthz"),
        "openapi": client.get("/openapi.json"),
    }


def test_every_answer_carries_the_security_headers(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for name, response in _answers(client, auth).items():
        headers = response.headers  # type: ignore[attr-defined]
        for header in SECURITY_HEADERS:
            assert header in headers, (name, header)
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], name
        assert headers["X-Request-Id"], name
        assert "Server" not in headers, name


def test_consent_data_and_errors_are_never_cached(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for name, response in _answers(client, auth).items():
        if name in ("healthz", "openapi"):
            continue
        assert response.headers["Cache-Control"] == "no-store", name  # type: ignore[attr-defined]


def test_errors_are_problem_json_without_internals(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    for name, response in _answers(client, auth).items():
        status = response.status_code  # type: ignore[attr-defined]
        if status < 400:
            continue
        assert response.mimetype == "application/problem+json", name  # type: ignore[attr-defined]
        body = response.get_json()  # type: ignore[attr-defined]
        assert body["request_id"] == response.headers["X-Request-Id"], name  # type: ignore[attr-defined]
        text = json.dumps(body).lower()
        for leak in ("traceback", "sqlalchemy", "select ", "werkzeug", "python", "flask/"):
            assert leak not in text, (name, leak)


def test_log_lines_are_json_with_the_request_id_and_ids_only(
    client: FlaskClient, auth: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consent_service.access")
    body = consent_body(patient_id="pat-secret-ref", reason="she told me about her illness")
    response = client.post("/v1/consents", json=body, headers=auth)
    record = next(r for r in caplog.records if r.name == "consent_service.access")
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert line["route"] == "/v1/consents" and line["status"] == 201 and line["client_id"]
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "illness" not in everything and "pat-secret-ref" not in everything


def test_the_outage_handler_answers_503_problem_json(app: Flask, auth: dict[str, str]) -> None:
    from sqlalchemy.exc import OperationalError

    @app.get("/v1/_outage")
    def outage() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    response = app.test_client().get("/v1/_outage", headers=auth)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"]
    assert "SELECT" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONSENT_RATE_LIMITS", "decisions=lots"),
        ("CONSENT_RATE_LIMITS", "everything=10/second"),
        ("CONSENT_API_KEY_PEPPER", "short"),
        ("CONSENT_AUDIT_KEYS", "also-short"),
    ],
)
def test_bad_security_settings_stop_start_up_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})
