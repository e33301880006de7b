"""Patient links point at CONSENT_PUBLIC_URL when set, whatever Host the caller sent."""

from __future__ import annotations

import dataclasses

import pytest
from flask.testing import FlaskClient

from consent_service import create_app
from consent_service.config import ConfigError, Settings
from consent_service.db.session import Database
from tests.web.conftest import request_body


def test_links_use_the_public_url_not_the_host_header(
    settings: Settings, database: Database, auth: dict[str, str]
) -> None:
    public = dataclasses.replace(settings, public_url="https://consent.example/base")
    client: FlaskClient = create_app(public, database=database).test_client()
    created = client.post(
        "/v1/consent-requests",
        json=request_body(),
        headers={**auth, "Host": "attacker.example"},
    ).get_json()
    assert created["form_url"].startswith("https://consent.example/base/consent/")
    status = client.get(f"/v1/consent-requests/{created['id']}", headers=auth).get_json()
    assert status["manage_url"].startswith("https://consent.example/base/consent/")


def test_links_follow_the_request_host_by_default(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    created = client.post("/v1/consent-requests", json=request_body(), headers=auth).get_json()
    assert created["form_url"].startswith("http://localhost/consent/")


@pytest.mark.parametrize(
    "value", ["ftp://consent.example", "consent.example", "https://x.example/?a=1", "https://"]
)
def test_a_bad_public_url_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="CONSENT_PUBLIC_URL"):
        Settings.from_env({"CONSENT_PUBLIC_URL": value, "CONSENT_SECRET_KEYS": "k" * 32})


def test_a_trailing_slash_is_dropped() -> None:
    settings = Settings.from_env(
        {"CONSENT_PUBLIC_URL": "https://consent.example/", "CONSENT_SECRET_KEYS": "k" * 32}
    )
    assert settings.public_url == "https://consent.example"
