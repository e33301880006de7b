"""The ``consent-service`` command."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from consent_service.cli import keys as cli_keys
from consent_service.cli import policies as web_cli
from consent_service.cli import relay as outbox_cli
from consent_service.cli.audit import audit_group
from consent_service.config import DEVELOPMENT_KEY_WARNINGS, DEVELOPMENT_KEYS_WARNED, load_settings
from consent_service.db.migrate import upgrade
from consent_service.db.session import Database
from consent_service.services import clients as client_service
from consent_service.services.errors import DomainError
from consent_service.timefmt import format_instant, utcnow


class _MainGroup(click.Group):
    """Reports a database it cannot open or reach in one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (OperationalError, ProgrammingError) as error:
            reason = (str(error.orig).strip().splitlines() or ["unreachable"])[0]
            if _is_missing_table(reason):
                click.echo(
                    "consent-service: the database has no tables yet: "
                    "run `consent-service db upgrade` first.",
                    err=True,
                )
                sys.exit(2)
            if isinstance(error, ProgrammingError):
                raise
            click.echo(
                f"consent-service: cannot use the database at CONSENT_DATABASE_URL: {reason}",
                err=True,
            )
            sys.exit(2)


def _is_missing_table(reason: str) -> bool:
    """SQLite's "no such table", PostgreSQL's "relation ... does not exist"."""
    return reason.startswith("no such table") or (
        reason.startswith("relation ") and reason.endswith("does not exist")
    )


@click.group(cls=_MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Record, decide and stream patients' consents to share health data."""


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", type=int, default=None, help="gunicorn workers (default: from CPUs).")
def serve(bind: str, workers: int | None) -> None:
    """Run the API and web form under gunicorn (migrates SQLite first)."""
    settings = load_settings(*DEVELOPMENT_KEY_WARNINGS)
    os.environ[DEVELOPMENT_KEYS_WARNED] = "1"
    if settings.database_url.startswith("sqlite"):
        upgrade(settings.database_url)
    if not os.environ.get("CONSENT_SECRET_KEYS", "").strip():
        # One development key for every worker: a link signed by one must verify on another.
        os.environ["CONSENT_SECRET_KEYS"] = settings.secret_keys[0]
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:consent_service.gunicorn_conf",
        "--bind",
        bind,
    ]
    if workers:
        args += ["--workers", str(workers)]
    os.execv(sys.executable, [*args, "consent_service:create_app()"])  # noqa: S606


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations up to REVISION."""
    settings = load_settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
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


main.add_command(outbox_cli.relay)
main.add_command(outbox_cli.expire)
main.add_command(web_cli.policies)
main.add_command(audit_group)
clients.add_command(cli_keys.rotate)
clients.add_command(cli_keys.revoke_key)
