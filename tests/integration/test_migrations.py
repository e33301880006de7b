"""Alembic: up from empty, down to base, up again, and the models match the migrated schema."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import consent_service.db
from consent_service.db.base import Base
from consent_service.db.migrate import alembic_config, upgrade
from tests.conftest import POSTGRES_URL


def _load_every_model_module() -> None:
    """Register every table the code declares, whichever module declares it."""
    for module in pkgutil.iter_modules(consent_service.db.__path__):
        if module.name.endswith("models"):
            importlib.import_module(f"consent_service.db.{module.name}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a brand-new, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("CONSENT_TEST_POSTGRES_URL is not set")
    name = f"consent_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _schema_diff(url: str) -> list[Any]:
    _load_every_model_module()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": False}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_and_models_match(empty_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(empty_url)).get_current_head()

    upgrade(empty_url)
    assert _current_revision(empty_url) == head
    migrated = _tables(empty_url)
    assert {"consents", "consent_versions", "outbox_events", "idempotency_records"} <= migrated
    assert _schema_diff(empty_url) == []

    command.downgrade(alembic_config(empty_url), "base")
    assert _current_revision(empty_url) is None
    assert _tables(empty_url) <= {"alembic_version"}

    upgrade(empty_url)
    assert _current_revision(empty_url) == head
    assert _tables(empty_url) == migrated
    assert _schema_diff(empty_url) == []


def test_one_linear_history() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(scripts.get_heads()) == 1
    assert len(scripts.get_bases()) == 1
    revisions = list(scripts.walk_revisions())
    assert all(len(r._all_down_revisions) <= 1 for r in revisions)
