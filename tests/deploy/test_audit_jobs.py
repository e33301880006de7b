"""The chart's audit CronJobs, run for real: their command lines, in their pods' environment.

Each job's ``args`` go to the real ``consent-service`` executable (the image's
entrypoint) with the environment the chart gives that pod, against a SQLite
file standing in for PostgreSQL: the checkpoint prints exactly one JSON line
on stdout (what the log pipeline ships), and verify exits 1, failing the Job,
when the chain is broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import helm_python as helm
import pytest
from sqlalchemy import update

from consent_service import audit
from consent_service.config import Settings
from consent_service.db.audit_models import AuditCheckpoint, AuditEntry
from consent_service.db.session import Database
from consent_service.timefmt import utcnow
from tests.deploy.conftest import FULLNAME, one, pod_environment, pod_specs, render

EXECUTABLE = Path(sys.executable).parent / "consent-service"


@pytest.fixture(scope="module")
def pods(chart: helm.Chart) -> dict[str, tuple[list[str], dict[str, str]]]:
    """(args, environment) of each workload, as the chart renders them by default."""
    objects = render(chart)
    one(objects, "CronJob", f"{FULLNAME}-audit-verify")  # on by default
    return {
        name.removeprefix(f"{FULLNAME}-"): (
            spec["containers"][0]["args"],
            pod_environment(objects, spec, Path("/nonexistent")),
        )
        for name, spec in pod_specs(objects)
    }


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'consent.db'}")
    yield db
    db.dispose()


@pytest.fixture
def run(pods: dict[str, tuple[list[str], dict[str, str]]], database: Database) -> Run:
    """Run one workload's command line, in its environment, on the test's database."""

    def start(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args, env = pods[name]
        return subprocess.run(
            [str(EXECUTABLE), *args, *extra],
            env={"PATH": "/usr/bin:/bin", **env, "CONSENT_DATABASE_URL": database.url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return start


@pytest.fixture(autouse=True)
def entries(
    pods: dict[str, tuple[list[str], dict[str, str]]], database: Database, run: Run
) -> Iterator[None]:
    """The migrated database, with a few audit entries under the jobs' audit key."""
    migrated = run("migrate")
    assert migrated.returncode == 0, migrated.stderr
    audit.reset_chains()
    audit.configure(Settings.from_env(pods["audit-verify"][1]).audit_keys)
    try:
        with database.engine.connect() as connection:
            for n in range(3):
                record = audit.Record("consent.read", "ok", 200, {"consent_id": f"c-{n}"})
                audit.append(connection, [record], now=utcnow())
        yield
    finally:
        # Leave this process as other tests expect it: development key, no chain.
        audit.reset_chains()
        audit.configure(Settings().audit_keys)


def test_checkpoint_prints_one_signed_json_line_on_stdout(
    run: Run, database: Database, tmp_path: Path
) -> None:
    result = run("audit-checkpoint")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    checkpoint = json.loads(line)
    assert set(checkpoint) == {"body", "key_id", "signature"}
    assert len(json.loads(checkpoint["body"])["heads"]) == 1

    # What the shipped line is for: a truncated tail is found even when the
    # stored checkpoints went with it.
    shipped = tmp_path / "checkpoints.jsonl"
    shipped.write_text(result.stdout)
    with database.transaction() as session:
        last = session.query(AuditEntry).order_by(AuditEntry.id.desc()).first()
        assert last is not None
        session.delete(last)
        session.query(AuditCheckpoint).delete()
    assert run("audit-verify").returncode == 0  # nothing in the database shows it
    found = run("audit-verify", "--checkpoints", str(shipped))
    assert found.returncode == 1
    assert "truncated" in json.loads(found.stdout)["problems"][0]


def test_verify_fails_the_job_when_the_chain_is_broken(run: Run, database: Database) -> None:
    intact = run("audit-verify")
    assert intact.returncode == 0, intact.stdout + intact.stderr
    report = json.loads(intact.stdout)
    assert report["ok"] is True and report["entries"] >= 2

    with database.transaction() as session:
        first = session.query(AuditEntry).order_by(AuditEntry.id).first()
        assert first is not None
        session.execute(update(AuditEntry).where(AuditEntry.id == first.id).values(outcome="x"))
    broken = run("audit-verify")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["ok"] is False and report["first_broken_entry"] == first.id
