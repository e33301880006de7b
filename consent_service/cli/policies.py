"""``consent-service policies``: publish and list versions of the consent text."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from consent_service.config import load_settings
from consent_service.db.session import Database
from consent_service.services import policies as service
from consent_service.services.errors import DomainError
from consent_service.timefmt import format_instant, utcnow


def _database() -> Database:
    return Database(load_settings().database_url)


@click.group()
def policies() -> None:
    """Versions of the consent text shown on the patient form."""


@policies.command("add")
@click.option("--version", "version", required=True, help="e.g. 2027-01 (letters, digits . _ -).")
@click.option("--language", type=click.Choice(service.LANGUAGES), required=True)
@click.option("--title", required=True, help="One line shown above the text.")
@click.option(
    "--body-file",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help="The text, paragraphs separated by a blank line ('-' reads standard input).",
)
def policies_add(version: str, language: str, title: str, body_file: TextIO) -> None:
    """Publish a new version: patients answering from now on read it."""
    body = body_file.read()
    database = _database()
    try:
        with database.transaction() as session:
            text = service.add_policy_text(
                session, version=version, language=language, title=title, body=body, now=utcnow()
            )
            digest = text.sha256
    except DomainError as error:
        raise click.ClickException(error.detail) from None
    finally:
        database.dispose()
    click.echo(f"published {version} ({language}) sha256={digest}")


@policies.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with the texts.")
def policies_list(as_json: bool) -> None:
    """Every published version, oldest first."""
    database = _database()
    try:
        with database.reading() as session:
            rows = [
                {
                    "version": text.version,
                    "language": text.language,
                    "title": text.title,
                    "sha256": text.sha256,
                    "created_at": format_instant(text.created_at),
                    "body": text.body,
                }
                for text in service.list_policy_texts(session)
            ]
    finally:
        database.dispose()
    if as_json:
        json.dump(rows, sys.stdout, ensure_ascii=False)
        click.echo()
        return
    for row in rows:
        click.echo(f"{row['version']}  {row['language']}  {row['sha256'][:12]}  {row['title']}")
