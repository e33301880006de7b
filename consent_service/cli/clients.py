"""``consent-service clients``: partner API clients (create, list, revoke) and their keys."""

from __future__ import annotations

import json
from typing import Any

import click

from consent_service.cli import keys
from consent_service.config import load_settings
from consent_service.db.session import Database
from consent_service.services import clients as client_service
from consent_service.services.errors import DomainError
from consent_service.timefmt import format_instant, utcnow


@click.group()
def clients() -> None:
    """Partner API clients and their keys."""


@clients.command("create")
@click.option("--org", "organization", required=True, help="The organization (tenant).")
@click.option(
    "--scopes",
    required=True,
    help=f"Comma separated, among: {', '.join(client_service.SCOPES)}.",
)
@click.option("--name", default="", help="A label for people (not a secret).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def clients_create(organization: str, scopes: str, name: str, as_json: bool) -> None:
    """Create a client; its API key is printed once and stored only hashed."""
    settings = load_settings("CONSENT_API_KEY_PEPPER")
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            client, api_key = client_service.create_client(
                session,
                organization=organization,
                scopes=[scope.strip() for scope in scopes.split(",") if scope.strip()],
                name=name or organization,
                now=utcnow(),
                peppers=settings.api_key_peppers,
            )
    except DomainError as error:
        raise click.UsageError(error.detail) from None
    if as_json:
        click.echo(json.dumps({"client_id": client.id, "api_key": api_key}))
    else:
        click.echo(f"client_id: {client.id}\napi_key:   {api_key}\n(shown once: store it now)")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def clients_list(as_json: bool) -> None:
    """List clients (never their keys)."""
    database = Database(load_settings().database_url)
    with database.reading() as session:
        rows: list[dict[str, Any]] = [
            {
                "client_id": client.id,
                "organization": client.organization,
                "name": client.name,
                "scopes": client.scopes,
                "created_at": format_instant(client.created_at),
                "revoked_at": format_instant(client.revoked_at) if client.revoked_at else None,
            }
            for client in client_service.list_clients(session)
        ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else "active"
        click.echo(f"{row['client_id']}  {row['organization']}  {','.join(row['scopes'])}  {state}")


@clients.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Revoke a client's key at once."""
    database = Database(load_settings().database_url)
    try:
        with database.transaction() as session:
            client_service.revoke_client(session, client_id=client_id, now=utcnow())
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    click.echo(f"revoked {client_id}")


clients.add_command(keys.rotate)
clients.add_command(keys.revoke_key)
