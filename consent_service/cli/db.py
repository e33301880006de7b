"""``consent-service db``: the database schema."""

from __future__ import annotations

import click

from consent_service.config import load_settings
from consent_service.db.migrate import upgrade


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations up to REVISION."""
    settings = load_settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")
