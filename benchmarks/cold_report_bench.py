"""Cold `make report` (issue 24 target: under 14 minutes on a 2-core machine), written as Markdown.

    python3 benchmarks/cold_report_bench.py [--out benchmarks/results/cold_report.md]

Clones this repository's HEAD into a temporary folder and runs `make report` there, as a new user
does on a fresh machine: the virtual environment and its packages are installed, every measurement
runs, the report renders. It times the whole command and each stage (set-up, run, report), and reads
each measurement's seconds from the store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-600:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cold_report.md"))
    ap.add_argument("--keep", help="copy the clone's reports/orca here afterwards (the store, the report)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        # the Makefile's own targets, one after another: what `make report` runs
        times = {
            "set-up (venv, packages)": stage(["make", "setup"], clone),
            "run (every measurement)": stage([".venv/bin/orca-analysis", "run", "orca"], clone),
            "report (render)": stage([".venv/bin/orca-analysis", "report", "orca"], clone),
        }
        if args.keep:
            shutil.copytree(clone / "reports/orca", args.keep, dirs_exist_ok=True)
        db = sqlite3.connect(clone / "reports/orca/results.sqlite")
        per = db.execute(
            "SELECT measurement, COUNT(*), SUM(seconds) FROM units GROUP BY measurement"
        ).fetchall()
        db.close()
    total = sum(times.values())
    text = [
        "# Cold `make report`",
        "",
        f"Date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; commit {commit.stdout.strip()}; machine: "
        f"{platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}. Produced by "
        "`benchmarks/cold_report_bench.py`: a fresh clone, `make setup`, `orca-analysis run orca`, `orca-analysis "
        "report orca` (what `make report` runs; the GPU results folder is empty), wall clock.",
        "",
        "| stage | wall s |",
        "|---|---|",
        *(f"| {k} | {v:.1f} |" for k, v in times.items()),
        f"| **total** | **{total:.1f}** ({total / 60:.1f} min; target under 14 min) |",
        "",
        "Each measurement's seconds as the store records them (summed over its calls; the analytic ones run on a",
        "pool of workers, one per core, and training two runs at a time, so these overlap):",
        "",
        "| measurement | calls | seconds |",
        "|---|---|---|",
        *(f"| {m} | {n} | {s:.1f} |" for m, n, s in per),
    ]
    Path(args.out).write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
