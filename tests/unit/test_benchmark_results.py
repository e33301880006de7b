"""The benchmark results files and the table generated from them (benchmarks/results.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import report, results


def test_a_run_is_saved_with_its_provenance_and_verdicts(tmp_path: Path) -> None:
    run = results.Run("relay_throughput", settings={"events": 10})
    run.add("relay / raw producer", 0.52, target=">= 0.5", database="sqlite", detail="9 / 17")
    run.add("p99", 31.0, unit="ms", target="< 30", database="sqlite")
    run.add("apply rate", 2200.0, unit="/s")
    saved = json.loads(run.save(tmp_path).read_text())

    assert saved["benchmark"] == "relay_throughput"
    assert saved["quick"] is False
    assert saved["date"].endswith("Z")
    assert len(saved["commit"]) == 40 or saved["commit"] == "unknown"
    assert saved["machine"]["cpus"] >= 1
    assert saved["settings"] == {"events": 10}
    assert [(m["name"], m["met"]) for m in saved["measurements"]] == [
        ("relay / raw producer", True),
        ("p99", False),
        ("apply rate", None),
    ]


def test_a_malformed_target_fails_when_added() -> None:
    with pytest.raises(ValueError, match="op in"):
        results.Run("x").add("ratio", 1.0, target="about 0.5")


def test_the_report_keeps_the_newest_full_run_per_measurement(tmp_path: Path) -> None:
    old = results.Run("relay_throughput", date="2026-12-01T10:00:00Z")
    old.add("relay / raw producer", 0.37, target=">= 0.5", database="sqlite")
    old.add("relay / raw producer", 0.40, target=">= 0.5", database="postgresql")
    new = results.Run("relay_throughput", date="2026-12-02T10:00:00Z")
    new.add("relay / raw producer", 0.55, target=">= 0.5", database="sqlite")
    quick = results.Run("relay_throughput", quick=True, date="2026-12-03T10:00:00Z")
    quick.add("relay / raw producer", 0.01, target=">= 0.5", database="sqlite")
    for run in (old, new, quick):
        run.save(tmp_path)

    table = results.render_table(results.latest(results.load(tmp_path)))
    rows = table.splitlines()[2:]
    assert len(rows) == 2
    assert "| postgresql | relay / raw producer | 0.40 | >= 0.5 | MISSED |" in rows[0]
    assert "2026-12-01 10:00 UTC" in rows[0]
    assert "| sqlite | relay / raw producer | 0.55 | >= 0.5 | met |" in rows[1]
    assert "0.01" not in table


def test_report_writes_between_the_markers_and_check_sees_staleness(tmp_path: Path) -> None:
    run = results.Run("revocation_latency", date="2026-12-02T10:00:00Z")
    run.add("revoke to deny p99", 21.5, unit="ms", target="< 30", database="postgresql")
    run.save(tmp_path / "results")
    document = tmp_path / "README.md"
    document.write_text(
        f"# Title\n\nbefore\n{results.BEGIN_MARKER}\nold table\n{results.END_MARKER}\nafter\n"
    )
    arguments = ["--results-dir", str(tmp_path / "results"), str(document)]

    assert report.main(["--check", *arguments]) == 1
    assert report.main(arguments) == 0
    assert report.main(["--check", *arguments]) == 0
    text = document.read_text()
    assert "old table" not in text
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(
        f"{results.END_MARKER}\nafter\n"
    )
    assert "| revocation_latency | postgresql | revoke to deny p99 | 21.5 ms | < 30 | met |" in text


def test_a_document_without_markers_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="markers"):
        results.replace_between_markers("no markers here", "| table |\n")


def test_the_committed_tables_match_the_committed_results() -> None:
    """A results file added without running ``benchmarks/report.py`` fails here."""
    assert report.main(["--check"]) == 0
