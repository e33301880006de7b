"""``consent-service clients rotate`` and ``clients revoke-key``: key rotation."""

from __future__ import annotations

import json
from datetime import timedelta

import click

from consent_service.config import load_settings
from consent_service.db.session import Database
from consent_service.services import clients as client_service
from consent_service.services.errors import DomainError
from consent_service.timefmt import format_instant, utcnow


@click.command("rotate")
@click.argument("client_id")
@click.option(
    "--grace-hours",
    type=click.IntRange(0, 24 * 90),
    default=24,
    show_default=True,
    help="How long the current key keeps working.",
)
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="The new key's lifetime.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rotate(client_id: str, grace_hours: int, expires_in_days: int | None, as_json: bool) -> None:
    """Issue a second key for CLIENT_ID; the current one stops after the grace period."""

    settings = load_settings("CONSENT_API_KEY_PEPPER")
    now = utcnow()
    try:
        with Database(settings.database_url).transaction() as session:
            issued = client_service.rotate_key(
                session,
                client_id=client_id,
                now=now,
                grace=timedelta(hours=grace_hours),
                peppers=settings.api_key_peppers,
                expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            )
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    expires = format_instant(issued.expires_at) if issued.expires_at else None
    if as_json:
        click.echo(
            json.dumps({"client_id": client_id, "api_key": issued.api_key, "expires_at": expires})
        )
    else:
        click.echo(f"api_key: {issued.api_key}\n(shown once: store it now; expires: {expires})")


@click.command("revoke-key")
@click.argument("prefix")
def revoke_key(prefix: str) -> None:
    """Stop one key at once, by its prefix (the part after ``csk_``)."""

    try:
        with Database(load_settings().database_url).transaction() as session:
            client_service.revoke_key(session, prefix=prefix, now=utcnow())
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    click.echo(f"revoked key {prefix}")
