"""The benchmark script runs end to end and prints its table (``--quick``).

It seeds small databases, starts the service and the bare baseline under
gunicorn, loads both with wrk (any non-2xx answer fails the run) and prints
one markdown row per database, size and path. The figures of a one-second
run mean nothing; what this guards is that the real run still works. The
API benchmark's smoke run is part of the fast set (about a minute): it is
the regression guard of the hot path's measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_quick_benchmark_prints_the_table(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (scripts/test installs it)")
    backends = ["sqlite"] + (["postgresql"] if os.environ.get("CONSENT_TEST_POSTGRES_URL") else [])
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "api_throughput.py"),
            "--quick",
            "--backends",
            ",".join(backends),
            "--workdir",
            str(tmp_path),
            "--results-dir",
            str(tmp_path / "results"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    header, rows = table[0], table[2:]
    assert "service / bare" in header
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1], c[2]) for c in cells] == [
        (backend, size, path)
        for backend in backends
        for size in ("500", "2k")
        for path in ("decisions", "creates")
    ]
    for row in cells:
        service, bare = (float(value.replace(",", "")) for value in row[3:5])
        assert service > 0 and bare > 0
        # One round: the median ratio is this round's ratio.
        assert float(row[5].split()[0]) == pytest.approx(service / bare, abs=0.015)
        scaling = row[8].split()
        if row[1] == "500":
            assert scaling == ["—"]
        else:
            assert float(scaling[0]) > 0 and scaling[1] in ("ok", "MISS")

    # The results file holds the same ratios, marked quick so that no README table takes them.
    (results_file,) = (tmp_path / "results").glob("*-api_throughput-quick.json")
    run = json.loads(results_file.read_text())
    assert run["quick"] is True and run["benchmark"] == "api_throughput"
    ratios = {(m["database"], m["name"]): m for m in run["measurements"]}
    for row in cells:
        name = (
            f"{row[2]} / bare {'select' if row[2] == 'decisions' else 'insert'}, {row[1]} consents"
        )
        measurement = ratios[(row[0], name)]
        assert f"{measurement['value']:.2f}" == row[5].split()[0]
        assert measurement["met"] == (row[5].split()[-1] == "ok")
    assert {(c[0], f"{c[2]} 2k / 500") for c in cells if c[1] == "2k"} <= set(ratios)


@pytest.mark.slow
def test_guarantee_costs_quick_prints_every_variant() -> None:
    backends = ["sqlite"] + (["postgresql"] if os.environ.get("CONSENT_TEST_POSTGRES_URL") else [])
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "guarantee_costs.py"),
            "--quick",
            "--backends",
            ",".join(backends),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")][2:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    for backend in backends:
        for path, extra in (
            ("decisions", "without the emergency accesses in the decision statement"),
            ("creates", "without the version's audit entry"),
        ):
            variants = {c[2]: c for c in cells if (c[0], c[1]) == (backend, path)}
            assert {"bare app", "service", extra} <= set(variants)
            assert variants["service"][5] == "+0.00"
            assert all(float(c[3]) > 0 and float(c[4]) > 0 for c in variants.values())
