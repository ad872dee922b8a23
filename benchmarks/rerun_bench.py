"""Benchmark: a re-run with everything stored (issue 7 target: the default study in under 10 s).

    .venv/bin/python benchmarks/rerun_bench.py [--out benchmarks/results/rerun.md]

Two cases, each timed as a user runs it (`orca-analysis run`, a fresh interpreter, wall clock):
- shipped: the default study as it ships; the first run measures for real, then re-runs.
- all measurements: the default study's variants and workloads with every registered measurement,
  its store filled with synthetic records (100 per stored unit, the units a real run would store),
  so the re-run plans, skips and exports at that scale without hours of measuring first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import yaml

from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.results import Record, open_store
from orca_analysis.results.environment import local_provenance
from orca_analysis.results.records import device_name
from orca_analysis.runner import plan_calls, unit_for
from orca_analysis.study import load_study
from orca_analysis.study.load import BUILTIN_DIR

RECORDS_PER_UNIT = 100


def timed_run(study: str, out: Path) -> tuple[float, float, str]:
    """Wall clock and CPU seconds (user + system) of one `orca-analysis run`, and its last line."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    cmd = [sys.executable, "-m", "orca_analysis", "run", study, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, proc.stderr.strip().splitlines()[-1]


def fill_synthetic(study_path: Path, out: Path) -> int:
    """Store what a real run of this study would store, with made-up values; returns units stored."""
    from orca_analysis.executors.base import Outcome

    study = load_study(str(study_path))
    env = local_provenance()
    calls, plan, _ = plan_calls(study, MEASUREMENTS, {}, {False: "", True: ""})
    with open_store(out / study.name) as store:
        store.set_plan(plan)
        for call in calls:
            (s, b), dtype = call.pairs[0], call.study.workloads.dtype
            records = [
                Record(
                    study.name,
                    call.variant.variant_id,
                    call.measurement.name,
                    f"m{i}",
                    "synthetic",
                    float(i),
                    "unit",
                    s,
                    b,
                    dtype,
                    swept=call.variant.swept,
                )
                for i in range(RECORDS_PER_UNIT)
            ]
            store.commit(
                unit_for(call, Outcome(call.index, records, "ok", "", 0.0, "synthetic", env)), records
            )
    return len(calls)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rerun.md"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reports"
        shipped = load_study("orca")
        first = timed_run("orca", out)[0]
        reruns = [timed_run("orca", out) for _ in range(args.repeats)]
        rows.append(("shipped", shipped, first, reruns, "measured"))
        every = yaml.safe_load((BUILTIN_DIR / "orca.yaml").read_text())
        every.update(name="orca_all", measurements=list(MEASUREMENTS))
        path = Path(tmp) / "orca_all.yaml"
        path.write_text(yaml.safe_dump(every))
        start = time.perf_counter()
        units = fill_synthetic(path, out)
        fill = time.perf_counter() - start
        reruns = [timed_run(str(path), out) for _ in range(args.repeats)]
        rows.append(("all measurements", load_study(str(path)), fill, reruns, f"synthetic ({units} units)"))
    lines = [
        "# Re-run with everything stored",
        "",
        f"- date: {dt.date.today().isoformat()}; machine: {device_name('cpu')}, {platform.platform()}",
        f"- versions: python {platform.python_version()}, torch {version('torch')}, "
        f"x-transformers {version('x-transformers')}, orca-analysis {version('orca-analysis')}",
        "- command: `orca-analysis run STUDY` in a fresh interpreter (imports included), wall clock;",
        f"  re-run = median of {args.repeats}, wall clock and CPU (user + system) of the process.",
        f"- load average when done: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
        "(a shared machine: wall clock stretches with the load, CPU time does not).",
        "- target: the re-run of the default study under 10 s.",
        "",
        "| case | variants | measurements | workloads | first run / fill (s) | re-run wall (s) | re-run CPU (s) "
        "| stored | re-run says |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, study, first, reruns, stored in rows:
        wall, cpu = (statistics.median(r[i] for r in reruns) for i in (0, 1))
        said = reruns[-1][2].split(";")[0]
        lines.append(
            f"| {name} | {len(study.variants())} | {len(study.measurements)} | {len(study.workloads.pairs())} "
            f"| {first:.1f} | {wall:.1f} | {cpu:.1f} | {stored} | {said} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
