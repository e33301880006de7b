"""What the command says before anything works: scopes, a missing schema, development keys."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from consent_service.cli import main
from consent_service.config import DEVELOPMENT_KEY_WARNINGS, Settings
from consent_service.services.clients import SCOPES

COMMAND = shutil.which("consent-service", path=str(Path(sys.executable).parent))


def test_clients_create_help_lists_every_scope() -> None:
    result = CliRunner().invoke(main, ["clients", "create", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for scope in SCOPES:
        assert scope in result.output


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert COMMAND, "the consent-service entry point is not installed"
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CONSENT_")}
    return subprocess.run(
        [COMMAND, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    "args", [("clients", "list"), ("clients", "create", "--org", "o", "--scopes", "admin")]
)
def test_an_unmigrated_database_says_to_run_db_upgrade(tmp_path: Path, args: tuple[str]) -> None:
    done = _run(tmp_path, *args, CONSENT_API_KEY_PEPPER="cli-test-pepper-0123456789abcdef01")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "consent-service db upgrade" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.postgres
def test_an_unmigrated_postgresql_database_says_to_run_db_upgrade(tmp_path: Path) -> None:
    base = os.environ.get("CONSENT_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("CONSENT_TEST_POSTGRES_URL is not set")
    # The server's maintenance database has none of the service's tables.
    done = _run(tmp_path, "clients", "list", CONSENT_DATABASE_URL=base)
    assert done.returncode == 2
    assert "consent-service db upgrade" in done.stderr and "Traceback" not in done.stderr


def test_commands_warn_only_of_the_development_keys_they_use(tmp_path: Path) -> None:
    upgraded = _run(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "development key" not in upgraded.stderr
    created = _run(tmp_path, "clients", "create", "--org", "o", "--scopes", "admin")
    assert created.returncode == 0, created.stderr
    assert created.stderr.count("development key") == 1
    assert "CONSENT_API_KEY_PEPPER" in created.stderr
    verified = _run(tmp_path, "audit", "verify")
    assert "CONSENT_SECRET_KEYS" not in verified.stderr
    assert "CONSENT_API_KEY_PEPPER" not in verified.stderr


def test_settings_alone_warn_of_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="consent_service.config")
    settings = Settings.from_env({})
    assert caplog.records == []
    assert set(settings.development_keys) == set(DEVELOPMENT_KEY_WARNINGS)
    settings.warn_development_keys("CONSENT_SECRET_KEYS")
    assert [record.getMessage() for record in caplog.records] == [
        DEVELOPMENT_KEY_WARNINGS["CONSENT_SECRET_KEYS"]
    ]
