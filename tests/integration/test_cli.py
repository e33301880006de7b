"""The ``consent-service`` command: clients, db upgrade, configuration errors, --help.

Most calls run in-process through click's runner against the test database;
one runs the installed entry point as a real process to check exit status
and stderr as a shell sees them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from alembic.migration import MigrationContext
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from sqlalchemy import create_engine

from consent_service.cli import main
from consent_service.db.session import Database
from tests.conftest import TEST_SECRET_KEYS
from tests.integration.api_support import assert_problem, create_consent
from tests.support.waiting import wait_until


def run(database_url: str, *args: str) -> Result:
    env = {"CONSENT_DATABASE_URL": database_url, "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0]}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_clients_create_prints_a_working_key(client: FlaskClient, database: Database) -> None:
    result = run(
        database.url,
        "clients",
        "create",
        "--org",
        "practice-cli",
        "--scopes",
        "consents:read,consents:write",
        "--json",
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert set(created) == {"client_id", "api_key"}
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    consent = create_consent(client, headers)
    assert consent["organization"] == "practice-cli"
    assert consent["actor"] == f"client:{created['client_id']}"
    assert client.get("/v1/consents", headers=headers).status_code == 200
    # Only the scopes asked for.
    assert_problem(client.get("/v1/events", headers=headers), 403)


def test_clients_list_never_prints_keys(database: Database) -> None:
    keys = []
    for org in ("org-one", "org-two"):
        result = run(database.url, "clients", "create", "--org", org, "--scopes", "admin", "--json")
        keys.append(json.loads(result.stdout)["api_key"])

    listed_json = run(database.url, "clients", "list", "--json")
    listed_text = run(database.url, "clients", "list")

    assert listed_json.exit_code == listed_text.exit_code == 0
    rows = json.loads(listed_json.stdout)
    assert sorted(row["organization"] for row in rows) == ["org-one", "org-two"]
    assert all(row["revoked_at"] is None for row in rows)
    for key in keys:
        secret = key.split("_", 2)[2]  # csk_<prefix>_<secret>; the secret may hold "_"
        assert len(secret) >= 20
        for output in (listed_json.output, listed_text.output):
            assert key not in output and secret not in output
    assert "org-one" in listed_text.stdout


def test_clients_revoke_stops_the_key(client: FlaskClient, database: Database) -> None:
    created = json.loads(
        run(
            database.url,
            "clients",
            "create",
            "--org",
            "org-r",
            "--scopes",
            "consents:read",
            "--json",
        ).stdout
    )
    headers = {"Authorization": f"Bearer {created['api_key']}"}
    assert client.get("/v1/consents", headers=headers).status_code == 200

    result = run(database.url, "clients", "revoke", created["client_id"])

    assert result.exit_code == 0, result.output
    # A worker trusts a key it verified for at most CONSENT_API_KEY_CACHE_MS (1 s).
    wait_until(
        lambda: client.get("/v1/consents", headers=headers).status_code == 401,
        3,
        "the revoked key to be refused",
    )
    assert_problem(client.get("/v1/consents", headers=headers), 401)
    rows = json.loads(run(database.url, "clients", "list", "--json").stdout)
    assert rows[0]["revoked_at"] is not None
    unknown = run(database.url, "clients", "revoke", "no-such-client")
    assert unknown.exit_code != 0


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--org", "o", "--scopes", "consents:read,superuser"], "scopes"),
        (["--org", "o", "--scopes", ""], "scopes"),
        (["--org", "bad org!", "--scopes", "admin"], "organization"),
        (["--scopes", "admin"], "--org"),
    ],
)
def test_clients_create_refuses_bad_input(
    database: Database, args: list[str], complaint: str
) -> None:
    result = run(database.url, "clients", "create", *args)
    assert result.exit_code == 2
    assert complaint in result.output.lower() or complaint in result.output
    assert json.loads(run(database.url, "clients", "list", "--json").stdout) == []


def test_db_upgrade_migrates_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = run(url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    engine = create_engine(url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() is not None
    engine.dispose()
    again = run(url, "db", "upgrade")
    assert again.exit_code == 0


@pytest.mark.parametrize(
    "url", ["not a url", "mysql://u:p@localhost/db", "", "sqlite+nosuchdriver:///x.db"]
)
def test_bad_database_url_is_one_clear_line(url: str) -> None:
    env = {"CONSENT_DATABASE_URL": url, "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0]}
    result = CliRunner().invoke(main, ["clients", "list"], env=env)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CONSENT_DATABASE_URL" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"CONSENT_OIDC_ISSUER": "https://idp.example"}, "CONSENT_OIDC_AUDIENCE"),
        ({"CONSENT_OIDC_ISSUER": "http://idp.example", "CONSENT_OIDC_AUDIENCE": "a"}, "ISSUER"),
        (
            {
                "CONSENT_OIDC_ISSUER": "https://idp.example",
                "CONSENT_OIDC_AUDIENCE": "a",
                "CONSENT_OIDC_ORG_CLAIM": "two words",
            },
            "CONSENT_OIDC_ORG_CLAIM",
        ),
    ],
)
def test_bad_oidc_setting_is_one_clear_line(variables: dict[str, str], named: str) -> None:
    env = {"CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0], **variables}
    for args in (["clients", "list"], ["serve"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://nobody:secret-password@127.0.0.1:1/none",
        "sqlite:////nonexistent-directory/sub/consent.db",
    ],
)
def test_unreachable_database_is_one_clear_line(url: str) -> None:
    env = {"CONSENT_DATABASE_URL": url, "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0]}
    for args in (["clients", "list"], ["clients", "create", "--org", "o", "--scopes", "admin"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "CONSENT_DATABASE_URL" in lines[0], result.stderr
        assert "secret-password" not in result.output


def test_installed_command_reports_bad_setting_and_exits_non_zero(tmp_path: Path) -> None:
    command = shutil.which("consent-service", path=str(Path(sys.executable).parent))
    assert command, "the consent-service entry point is not installed"
    env = {
        **os.environ,
        "CONSENT_DATABASE_URL": "oracle://nobody@nowhere/db",
        "CONSENT_SECRET_KEYS": TEST_SECRET_KEYS[0],
    }
    completed = subprocess.run(
        [command, "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONSENT_DATABASE_URL" in lines[0], completed.stderr
    assert completed.stdout == ""


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
        else:
            found.append((*prefix, name))
    return found


def test_help_everywhere() -> None:
    commands = _commands(main)
    for required in (
        ("serve",),
        ("db", "upgrade"),
        ("clients", "create"),
        ("clients", "list"),
        ("clients", "revoke"),
    ):
        assert required in commands
    for path in commands:
        for flag in ("--help", "-h"):
            result = CliRunner().invoke(main, [*path, flag])
            assert result.exit_code == 0, (path, result.output)
            assert result.output.startswith("Usage:"), path
            # Every command says what it does in its help.
            assert len(result.output.splitlines()) > 3, path
