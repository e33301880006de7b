"""GET /healthz, /readyz, /metrics, /openapi.json and the docs page."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.session import Database
from tests.integration.api_support import assert_problem, create_consent


def test_healthz_needs_no_key(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_readyz_reports_database_and_outbox_backlog(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    empty = client.get("/readyz").get_json()
    assert empty["status"] == "ready" and empty["database"] == "ok"
    assert empty["outbox"]["backlog"] == 0
    create_consent(client, auth)
    create_consent(client, auth)
    body = client.get("/readyz").get_json()
    assert body["outbox"]["backlog"] == 2
    assert body["outbox"]["oldest_age_seconds"] >= 0
    assert body["outbox"]["lagging"] is False


def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    unreachable = Database("postgresql+psycopg://nobody:nothing@127.0.0.1:1/none")
    app: Flask = create_app(settings, database=unreachable)
    try:
        response = app.test_client().get("/readyz")
    finally:
        unreachable.dispose()
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert "nobody" not in response.get_data(as_text=True)


def test_metrics_are_prometheus_text(client: FlaskClient, auth: dict[str, str]) -> None:
    create_consent(client, auth)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "# TYPE" in text
    # Route templates, never raw ids or patient references, label the series.
    assert "pat-" not in text


def test_openapi_document_and_docs_page(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/consents/{consent_id}" in spec["paths"]
    assert "bearer" in spec["components"]["securitySchemes"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.mimetype == "text/html"


def test_unknown_route_and_method_are_problems(client: FlaskClient, auth: dict[str, str]) -> None:
    assert_problem(client.get("/v1/nothing-here", headers=auth), 404)
    response = client.delete("/v1/consents", headers=auth)
    assert_problem(response, 405)
    assert "GET" in response.headers["Allow"]
