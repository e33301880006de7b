"""The application factory: it reads like a table of contents."""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, g, request
from flask_smorest import Api
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from consent_service.api import (
    consents,
    decisions,
    docs_ui,
    emergency,
    events,
    health,
    subscribers,
)
from consent_service.api import requests as consent_requests
from consent_service.api.apidoc import ConsentApi, document_vocabularies
from consent_service.api.metrics import register_metrics
from consent_service.audit import views as audit
from consent_service.config import DEVELOPMENT_KEYS_WARNED, Settings
from consent_service.db.session import Database
from consent_service.fhir import register_fhir
from consent_service.http import converters
from consent_service.http.context import ServiceState
from consent_service.http.parsing import JSON_TYPES, SafeJSONProvider
from consent_service.http.problems import (
    handle_database_error,
    handle_domain_error,
    handle_http_exception,
    handle_unexpected,
    problem,
)
from consent_service.http.request_ids import register_request_ids
from consent_service.http.security import register_security
from consent_service.services.errors import DomainError
from consent_service.services.identifiers import IDENTIFIER
from consent_service.web import views as web_views

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, database: Database | None = None) -> Flask:
    """Build the WSGI app (``gunicorn 'consent_service:create_app()'``)."""
    if settings is None:
        settings = Settings.from_env()
        if not os.environ.get(DEVELOPMENT_KEYS_WARNED):
            settings.warn_development_keys()
    app = Flask(__name__)
    app.json = SafeJSONProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="consent-service",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        PROPAGATE_EXCEPTIONS=False,
    )
    app.extensions["consent_service"] = ServiceState(
        settings=settings, database=database or Database(settings.database_url)
    )
    converters.install(app)
    register_request_ids(app)
    register_request_hooks(app)
    register_metrics(app)
    api = register_blueprints(app)
    register_errorhandlers(app, api)
    register_fhir(app)
    register_security(app, settings, app.extensions["consent_service"].database)
    return app


def register_blueprints(app: Flask) -> Api:
    api = ConsentApi(app, description=API_DESCRIPTION)
    document_vocabularies(api, app.extensions["consent_service"].settings)
    # The API's ``path`` segments are patient and practitioner ids, '/' included.
    api.register_converter(
        PathConverter, lambda _converter: {"type": "string", "pattern": IDENTIFIER.pattern}
    )
    for blueprint in (
        consents.blp,
        decisions.blp,
        emergency.blp,
        events.blp,
        audit.blp,
        consent_requests.blp,
        subscribers.blp,
    ):
        api.register_blueprint(blueprint)
    app.register_blueprint(health.blp)
    app.register_blueprint(docs_ui.blp)
    app.register_blueprint(web_views.blp)
    return api


def register_errorhandlers(app: Flask, api: Api) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(SQLAlchemyError, handle_database_error)
    app.register_error_handler(Exception, handle_unexpected)


def register_request_hooks(app: Flask) -> None:
    @app.before_request
    def require_json_writes() -> Response | None:
        is_api_write = request.method in ("POST", "PATCH", "PUT") and request.path.startswith(
            "/v1/"
        )
        has_body = bool(request.get_data(cache=True))
        if is_api_write and has_body and request.mimetype not in JSON_TYPES:
            return problem(415, "Unsupported Media Type", "Send application/json.")
        return None

    @app.after_request
    def add_standard_headers(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/v1/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


API_DESCRIPTION = (
    "Records, amends, revokes, expires and versions patients' consents to share health data "
    "with a named practitioner, and answers whether a practitioner may see a category of a "
    "patient's data for a purpose at an instant. Errors are application/problem+json."
)
