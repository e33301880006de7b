"""The ``consent-service`` command."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from consent_service.audit import cli as audit
from consent_service.cli import clients, db, mailer, policies, relay
from consent_service.config import DEVELOPMENT_KEY_WARNINGS, DEVELOPMENT_KEYS_WARNED, load_settings
from consent_service.db.migrate import upgrade


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


main.add_command(db.db)
main.add_command(clients.clients)
main.add_command(relay.relay)
main.add_command(relay.expire)
main.add_command(mailer.mailer)
main.add_command(policies.policies)
main.add_command(audit.audit_group)
