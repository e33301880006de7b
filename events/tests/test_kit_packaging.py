"""The kit ships on its own: its schemas match the published ones, and it needs no service code."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1]
PUBLISHED = KIT.parent / "schemas" / "events"
SHIPPED = KIT / "consent_events" / "schemas"


@pytest.mark.parametrize("name", sorted(p.name for p in PUBLISHED.glob("*.json")))
def test_shipped_schema_is_the_published_one(name: str) -> None:
    """A failure here means schemas/events/ changed: copy it to events/consent_events/schemas/."""
    assert (SHIPPED / name).read_bytes() == (PUBLISHED / name).read_bytes()


def test_no_schema_is_shipped_that_is_not_published() -> None:
    assert {p.name for p in SHIPPED.glob("*.json")} == {p.name for p in PUBLISHED.glob("*.json")}


def test_importing_the_kit_loads_no_service_or_web_framework() -> None:
    probe = (
        "import sys, consent_events, consent_events.cli;"
        "print(','.join(sorted(m for m in ('flask', 'sqlalchemy', 'consent_service')"
        " if m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


def test_distribution_depends_on_kafka_python_and_jsonschema_only() -> None:
    project = tomllib.loads((KIT / "pyproject.toml").read_text())["project"]
    names = sorted(d.split("[")[0].split(">")[0].strip() for d in project["dependencies"])
    assert (project["name"], names) == ("consent-events", ["jsonschema", "kafka-python"])
