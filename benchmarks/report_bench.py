"""`orca-analysis report` from one stored run, this tree against another commit, side by side: the wall time of
each fresh process (imports included) and whether the two write the same report.md, report.html, claims.json
and recommendations.json. Writes benchmarks/results/report.md.

    .venv/bin/python benchmarks/report_bench.py --store reports/orca/results.sqlite --before REV [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "report.md"
FILES = ("report.md", "report.html", "claims.json", "recommendations.json")


def render(tree: Path, store: Path, folder: Path) -> float:
    """Wall seconds of `report orca` over a fresh copy of the store in `folder`, importing from `tree`."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "orca").mkdir(parents=True)
    shutil.copy(store, folder / "orca" / "results.sqlite")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "orca_analysis", "report", "orca", "--out", str(folder)]
    subprocess.run(cmd, cwd=folder, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, required=True, help="a results.sqlite of the default study")
    ap.add_argument("--before", required=True, help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(before), args.before], cwd=ROOT, check=True
        )
        try:
            walls: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.rounds):  # alternating, so a change in the machine's load hits both
                for case, tree in (("before", before), ("after", ROOT)):
                    walls[case].append(render(tree, args.store, Path(tmp) / f"out-{case}"))
            same = [
                f
                for f in FILES
                if (Path(tmp) / "out-before/orca" / f).read_bytes()
                == (Path(tmp) / "out-after/orca" / f).read_bytes()
            ]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    lines = [
        "# Rendering the report from a stored run",
        "",
        f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}. Produced by `benchmarks/report_bench.py`: `orca-analysis report orca` "
        f"over a fresh copy of one store ({args.store.name}, {args.store.stat().st_size / 2**20:.0f} MiB), each a "
        f"fresh process (imports included), before = commit {args.before}, after = the working tree on commit "
        f"{commit.stdout.strip()}, alternating, {args.rounds} rounds.",
        "",
        "| case | wall s per round | median |",
        "|---|---|---|",
        *(f"| {k} | {', '.join(f'{x:.2f}' for x in v)} | {med[k]:.2f} |" for k, v in walls.items()),
        "",
        f"- after / before: {med['after'] / med['before']:.2f}.",
        f"- the same bytes in both: {', '.join(same) or 'none'}"
        + (f"; differ: {', '.join(f for f in FILES if f not in same)}" if len(same) < len(FILES) else "")
        + ".",
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
