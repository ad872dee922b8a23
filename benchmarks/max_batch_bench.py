"""The largest batch that fits a GPU: replayed from two walks' allocation timelines, against the commit before
(walks alone), side by side, written as Markdown.

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/max_batch_bench.py --before /tmp/before [--out benchmarks/results/max_batch.md]

1. `inspect --device h100` on Orca at 8192 tokens and on tests/fixtures/tiny.yaml (a design whose peak at batch
   1 and 2 is the optimizer step's, so walks alone double the batch): fresh processes, wall clock, before and
   after alternated, medians of 3; the largest batches each reports must be equal.
2. The forecast measurement of Orca's base variant (every GPU of the catalogue, float32 and bfloat16, the
   largest batch at 8192): before and after run at once in two processes (so both see the same load), each
   timed in-process; every record (metric, workload, labels, value, status) must be equal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSPECT = {
    "Orca, 8192 tokens": ["--seq-len", "8192"],
    "tests/fixtures/tiny.yaml": ["--study", "tests/fixtures/tiny.yaml"],
}
FORECAST = """
import json, sys, time
from orca_analysis.study import load_study
from orca_analysis.measurements.forecast.run import measure_forecast
study = load_study("orca")
t = time.perf_counter()
records = measure_forecast(study.base_variant, study)
took = time.perf_counter() - t
rows = sorted([r.metric, r.seq_len, r.batch, json.dumps(r.labels, sort_keys=True), r.value, r.status] for r in records)
json.dump({"s": took, "records": rows}, open(sys.argv[1], "w"))
"""


def _run(tree: Path, args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "orca_analysis", "inspect", *args, "--device", "h100", "--json"],
        check=True,
        capture_output=True,
        cwd=tree,
        env=env,
        text=True,
    )
    took = time.perf_counter() - t
    largest = json.loads(done.stdout)["forecast"]["max_batch"]
    return took, {step: [v["batch"] for v in by_len.values()] for step, by_len in largest.items()}


def inspect_rows(before: Path) -> list[str]:
    rows = [
        "| design | before: median wall (s) | runs | after: median wall (s) | runs | largest batch (train, prefill) "
        "before / after |",
        "|---|---|---|---|---|---|",
    ]
    for name, args in INSPECT.items():
        times: dict[str, list[float]] = {"before": [], "after": []}
        answers: dict[str, dict] = {}
        for _ in range(3):
            for case, tree in (("before", before), ("after", ROOT)):
                took, answers[case] = _run(tree, args)
                times[case].append(took)
        same = "equal" if answers["before"] == answers["after"] else "DIFFER"
        b, a = times["before"], times["after"]
        rows.append(
            f"| {name} | {statistics.median(b):.2f} | {', '.join(f'{x:.2f}' for x in b)} | "
            f"{statistics.median(a):.2f} | {', '.join(f'{x:.2f}' for x in a)} | "
            f"{answers['before']} / {answers['after']}: {same} |"
        )
    return rows


def forecast_rows(before: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "forecast.py"
        script.write_text(FORECAST)
        procs = {
            case: subprocess.Popen(
                [sys.executable, str(script), str(Path(tmp) / f"{case}.json")],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
            )
            for case, tree in (("before", before), ("after", ROOT))
        }
        for p in procs.values():
            if p.wait() != 0:
                raise SystemExit("the forecast measurement failed")
        got = {case: json.loads((Path(tmp) / f"{case}.json").read_text()) for case in procs}
    same = got["before"]["records"] == got["after"]["records"]
    largest = [r for r in got["after"]["records"] if r[0] == "gpu_max_batch"]
    return [
        "| case | seconds (in-process, both at once) | records |",
        "|---|---|---|",
        *[f"| {case} | {g['s']:.1f} | {len(g['records'])} |" for case, g in got.items()],
        "",
        f"Every record equal (metric, workload, labels, value, status): {'yes' if same else 'NO'}. "
        f"Largest batches among them: {len(largest)}.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a worktree of the commit to compare with")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/max_batch.md")
    args = ap.parse_args()
    rev = lambda tree: subprocess.run(  # noqa: E731
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    ).stdout.strip()
    head = (
        f"Date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, 2 cores shared, no "
        f"GPU; Python {platform.python_version()}, torch {version('torch')}, x-transformers "
        f"{version('x-transformers')}. Before: commit {rev(args.before)}; after: the working tree on commit "
        f"{rev(ROOT)}."
    )
    parts = [
        "# The largest batch: replayed against walked (issue 26)",
        "",
        head,
        "",
        "## inspect --device h100",
        "",
        *inspect_rows(args.before),
        "",
        "## The forecast measurement of Orca's base variant",
        "",
        *forecast_rows(args.before),
        "",
    ]
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
