"""Shared fixtures: a migrated database per backend, the app, API keys.

Every test that takes ``database`` runs once on SQLite and once on
PostgreSQL (when ``CONSENT_TEST_POSTGRES_URL`` is set; CI sets it). The
schema is migrated with Alembic once per session; tables are emptied after
each test. A rolled-back outer transaction would not do here: the API's own
commit point, concurrent writers and subprocesses must see committed rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from consent_service import create_app
from consent_service.audit import trail as audit_trail
from consent_service.audit import writer as audit_writer
from consent_service.config import Settings
from consent_service.db.base import Base
from consent_service.db.migrate import upgrade
from consent_service.db.session import Database
from consent_service.outbox.lease import lease_for
from consent_service.services.clients import SCOPES, create_client
from consent_service.timefmt import utcnow

POSTGRES_URL = os.environ.get("CONSENT_TEST_POSTGRES_URL")
TEST_SECRET_KEYS = ("test-signing-key-0123456789abcdef",)


def _fresh_postgres_database(base_url: str, name: str) -> str:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated database per backend for this test session (and xdist worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'consent.db'}"}
    if POSTGRES_URL:
        urls["postgresql"] = _fresh_postgres_database(POSTGRES_URL, f"consent_test_{worker}")
    for url in urls.values():
        upgrade(url)
    return urls


def empty_tables(database: Database) -> None:
    with database.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in PRESERVED_TABLES:
                connection.execute(table.delete())


# Seeded by migrations (reference data), kept between tests.
PRESERVED_TABLES: set[str] = {"policy_texts"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, database_urls: dict[str, str]) -> str:
    if request.param not in database_urls:
        pytest.skip("CONSENT_TEST_POSTGRES_URL is not set")
    name: str = request.param
    return name


@pytest.fixture
def database(backend: str, database_urls: dict[str, str]) -> Iterator[Database]:
    db = Database(database_urls[backend])
    try:
        yield db
    finally:
        # Batched audit entries of this test land before the tables are
        # emptied, not in the next test's.
        appended = audit_writer.flush(timeout=10)
        # The audit engine, writer thread and refusal timer of this database
        # hold connections until collected; close them now, test by test.
        audit_trail.release(db)
        empty_tables(db)
        try:
            assert_relay_lease_free(db)
        finally:
            db.dispose()
        # Entries that cannot land (a database the test made unreachable) are
        # retried for the rest of the session and fail every later flush: the
        # first failure names the test that left them.
        assert appended, "this test left audit entries unappended"


def assert_relay_lease_free(database: Database) -> None:
    """Fail the test that leaves the relay lease taken: every later relay would stand by."""
    lease = lease_for(database)
    assert lease.try_acquire(), "this test left the relay lease held (a relay still running?)"
    lease.release()


@pytest.fixture
def settings(database: Database) -> Settings:
    return Settings(database_url=database.url, secret_keys=TEST_SECRET_KEYS, rate_limits="off")


@pytest.fixture
def app(settings: Settings, database: Database) -> Flask:
    return create_app(settings, database=database)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


KeyFactory = Callable[..., dict[str, str]]


@pytest.fixture
def api_key(database: Database) -> KeyFactory:
    """Make a client and return Authorization headers for it."""

    def make(scopes: tuple[str, ...] = SCOPES, org: str = "practice-a") -> dict[str, str]:
        with database.transaction() as session:
            _, key = create_client(
                session, organization=org, scopes=list(scopes), name="test", now=utcnow()
            )
        return {"Authorization": f"Bearer {key}"}

    return make


@pytest.fixture
def auth(api_key: KeyFactory) -> dict[str, str]:
    """Headers of a client of organization ``practice-a`` holding every scope."""
    return api_key()


def consent_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "patient_id": f"pat-{uuid.uuid4().hex[:12]}",
        "practitioner_id": "rpps:10003456789",
        "categories": ["dental-chart", "radiographs"],
        "purposes": ["care-coordination"],
        "decision": "permit",
        "collection": {"method": "paper", "evidence_ref": "scan-42", "policy_version": "2026-01"},
    }
    body.update(overrides)
    return body


REPO_ROOT = Path(__file__).resolve().parent.parent
