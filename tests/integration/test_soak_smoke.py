"""A one-minute soak passes its own oracle, and its report has every figure issue 12 asks for.

``benchmarks/soak.py`` starts two API instances, three relays, two
subscriber kits and a Tansu broker, drives a mixed load and injects every
fault once (relay and worker kills, an instance kill, a broker outage, a
PostgreSQL cut, slow clients). Exit 0 means nothing was lost or reordered,
both subscribers' views equal the database, no 5xx fell outside a fault
window and the audit chain verifies; the checks below make sure the report
says so in figures, not just in its exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPORT_KEYS = {
    "minutes",
    "requests",
    "http_5xx",
    "http_5xx_outside_fault_windows",
    "faults",
    "topic",
    "committed_versions",
    "distinct_events_on_topic",
    "lost_events",
    "out_of_order_consents",
    "subscribers",
    "audit_verify",
    "rss_growth_pct",
    "operations",
}
FAULT_KINDS = {
    "kill_active_relay",
    "kill_api_worker",
    "kill_api_instance",
    "database_cut",
    "broker_outage",
    "slow_clients",
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_one_minute_soak_holds_its_oracle(tmp_path: Path) -> None:
    server = os.environ.get("CONSENT_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("the soak needs PostgreSQL (CONSENT_TEST_POSTGRES_URL)")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    report = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--minutes",
            "1",
            "--calibrate-seconds",
            "5",
            "--postgres-url",
            server,
            "--database-name",
            f"consent_soak_{worker}",
            "--report",
            str(report),
            "--workdir",
            str(tmp_path / "logs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    figures = json.loads(report.read_text())
    assert done.returncode == 0, (figures.get("failures"), done.stderr[-3000:])

    assert figures.keys() >= REPORT_KEYS
    assert {fault["kind"] for fault in figures["faults"]} == FAULT_KINDS
    assert all(fault["recovered_after_s"] is not None for fault in figures["faults"])
    assert figures["committed_versions"] > 0 and figures["lost_events"] == 0
    assert figures["distinct_events_on_topic"] >= figures["committed_versions"]
    assert figures["out_of_order_consents"] == 0
    assert [s["mismatches"] for s in figures["subscribers"]] == [0, 0]
    assert figures["http_5xx_outside_fault_windows"] == 0
    assert figures["audit_verify"]["ok"] is True
    assert {
        "grant",
        "amend",
        "revoke",
        "decide",
        "decide_batch",
        "consent_request",
        "events",
    } <= set(figures["operations"])
