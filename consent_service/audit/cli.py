"""``consent-service audit``: verify the chain, sign checkpoints, export, purge."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

import click

from consent_service import audit
from consent_service.config import load_settings
from consent_service.db.session import Database
from consent_service.timefmt import utcnow


def _database() -> Database:
    settings = load_settings("CONSENT_AUDIT_KEYS")
    audit.configure(settings.audit_keys)
    return Database(settings.database_url)


@click.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@click.option(
    "--checkpoints",
    "checkpoint_file",
    type=click.File("r"),
    help="Checkpoints exported earlier (JSON lines); their heads must still be present.",
)
@click.option(
    "--data",
    "with_data",
    is_flag=True,
    help="Also check every consent and version row against the digests in the log.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(checkpoint_file: IO[str] | None, with_data: bool, as_json: bool) -> None:
    """Walk every chain and checkpoint; exit 1 and name the first broken entry if any."""
    exported = [json.loads(line) for line in checkpoint_file or () if line.strip()]
    database = _database()
    with database.reading() as session:
        report = audit.verify(session, exported=exported)
        data = audit.verify_data(session) if with_data else None
    ok = report.ok and (data is None or data.ok)
    summary: dict[str, Any] = {
        "ok": ok,
        "entries": report.entries,
        "chains": report.chains,
        "checkpoints": report.checkpoints,
        "first_broken_entry": report.first_broken,
        "problems": report.problems,
    }
    if data is not None:
        summary["data"] = {
            "ok": data.ok,
            "consents": data.consents,
            "versions": data.versions,
            "unbound": data.unbound,
            "purged": data.purged,
            "problems": data.problems,
            "more_problems": data.more_problems,
        }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"{report.entries} entries in {report.chains} chains, "
            f"{report.checkpoints} checkpoints: {'OK' if report.ok else 'BROKEN'}"
        )
        if report.first_broken is not None:
            click.echo(f"first broken entry: {report.first_broken}")
        for problem in report.problems:
            click.echo(f"  {problem}")
        if data is not None:
            click.echo(
                f"{data.consents} consents, {data.versions} versions "
                f"({data.unbound} recorded before data binding, {data.purged} past the last "
                f"purge): {'OK' if data.ok else 'ALTERED'}"
            )
            for problem in data.problems:
                click.echo(f"  {problem}")
            if data.more_problems:
                click.echo(f"  ... and {data.more_problems} more")
    sys.exit(0 if ok else 1)


@audit_group.command("checkpoint")
def checkpoint() -> None:
    """Sign every chain's head; print the checkpoint as one JSON line to keep elsewhere."""
    database = _database()
    with database.transaction() as session:
        signed = audit.create_checkpoint(session, now=utcnow())
    click.echo(json.dumps(signed))


@audit_group.command("export")
@click.option("--after", type=int, default=0, show_default=True, help="Entries after this id.")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100_000, show_default=True)
def export(after: int, limit: int) -> None:
    """Print entries as JSON lines, in append order (for a SIEM or an archive)."""
    database = _database()
    with database.read_only() as connection:
        for entry in audit.list_entries(connection, organization=None, limit=limit, after_id=after):
            click.echo(json.dumps(entry))


@audit_group.command("purge")
@click.option(
    "--before",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Remove entries older than this UTC date.",
)
def purge(before: datetime) -> None:
    """Remove old entries behind a signed purge checkpoint; print that checkpoint."""
    instant = before.replace(tzinfo=UTC)
    database = _database()
    with database.transaction() as session:
        removed, signed = audit.purge(session, before=instant, now=utcnow())
    click.echo(json.dumps({"removed": removed, "checkpoint": signed}))
