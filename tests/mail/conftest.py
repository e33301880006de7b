"""An app that sends mail: settings naming an SMTP server, and a client of it."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask
from flask.testing import FlaskClient

from consent_service import create_app
from consent_service.config import Settings
from consent_service.db.session import Database

PUBLIC_URL = "http://consent.test"
MAIL_FROM = "Cabinet du Parc <noreply@cabinet.example>"


@pytest.fixture
def mail_settings(settings: Settings) -> Settings:
    """The test settings with mail on; the port is replaced by tests that run a server."""
    return dataclasses.replace(
        settings,
        smtp_url="smtp://127.0.0.1:25",
        mail_from=MAIL_FROM,
        mail_keys=settings.secret_keys,
        public_url=PUBLIC_URL,
    )


@pytest.fixture
def mail_app(mail_settings: Settings, database: Database) -> Flask:
    return create_app(mail_settings, database=database)


@pytest.fixture
def mail_client(mail_app: Flask) -> FlaskClient:
    return mail_app.test_client()
