"""The relay and revocation benchmarks run end to end in ``--quick`` mode and write their results.

What this guards is that the real runs still work and that their results
files feed ``benchmarks/report.py``; the figures of a few-second run on a
shared machine mean nothing, so no timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import results

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("CONSENT_TEST_POSTGRES_URL") else [])


def run_quick(script: str, results_dir: Path) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / script),
            "--quick",
            "--backends",
            ",".join(BACKENDS),
            "--results-dir",
            str(results_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = results_dir.glob("*.json")
    assert path.name.endswith(f"-{script.removesuffix('.py')}-quick.json")
    saved: dict[str, object] = json.loads(path.read_text())
    # The printed table is the one the report would generate from the file.
    printed = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert printed == results.render_table([saved]).splitlines()
    return saved


def measured(saved: dict[str, object]) -> dict[tuple[str, str | None], dict[str, object]]:
    measurements = saved["measurements"]
    assert isinstance(measurements, list)
    return {(m["name"], m["database"]): m for m in measurements}


@pytest.mark.timeout(300)
def test_relay_throughput_quick(tmp_path: Path) -> None:
    saved = run_quick("relay_throughput.py", tmp_path)
    assert saved["quick"] is True and saved["benchmark"] == "relay_throughput"
    figures = measured(saved)
    for backend in BACKENDS:
        ratio = figures[("relay / raw producer", backend)]
        assert isinstance(ratio["value"], float) and ratio["value"] > 0
        assert ratio["target"] == ">= 0.5" and ratio["met"] in (True, False)
        latency = figures[("commit to broker p99", backend)]
        assert latency["unit"] == "ms" and latency["target"] == "< 100"


@pytest.mark.timeout(300)
def test_revocation_latency_quick(tmp_path: Path) -> None:
    saved = run_quick("revocation_latency.py", tmp_path)
    assert saved["quick"] is True and saved["benchmark"] == "revocation_latency"
    names = {name for name, _ in measured(saved)}
    # --quick measures the kit's default fetch wait only.
    (p99_name,) = {name for name in names if name.startswith("revoke to deny p99")}
    for backend in BACKENDS:
        p99 = measured(saved)[(p99_name, backend)]
        assert p99["unit"] == "ms" and p99["target"] == "< 30"
        assert isinstance(p99["value"], float) and p99["value"] > 0
    rate = measured(saved)[("subscriber apply rate", None)]
    assert isinstance(rate["value"], float) and rate["value"] > 0
