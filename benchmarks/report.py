"""Regenerate the benchmark tables of README.md and benchmarks/README.md.

Reads every results file under ``benchmarks/results/`` (one per benchmark
run, see ``results.py``), keeps the newest full run's figure for each
benchmark, measurement and database, and writes the table between the
markers in both files. ``--check`` only says whether they are up to date.

    python benchmarks/report.py [--check] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import results  # the sibling module, found through the line above

DOCUMENTS = (results.ROOT / "README.md", results.ROOT / "benchmarks" / "README.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=results.RESULTS_DIR)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a document is not up to date"
    )
    parser.add_argument("documents", nargs="*", type=Path, default=list(DOCUMENTS))
    args = parser.parse_args(argv)
    table = results.render_table(results.latest(results.load(args.results_dir)))
    stale = []
    for document in args.documents:
        text = document.read_text(encoding="utf-8")
        updated = results.replace_between_markers(text, table)
        if updated != text:
            stale.append(document)
            if not args.check:
                document.write_text(updated, encoding="utf-8")
    for document in stale:
        print(f"{document}: {'out of date' if args.check else 'table regenerated'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
