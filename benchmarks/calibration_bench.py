"""The CPU check of the time forecast, calibrated at one token against two tokens, paired, written as Markdown.

    .venv/bin/python benchmarks/calibration_bench.py [--out benchmarks/results/calibration.md] [--rounds 2]
    .venv/bin/python benchmarks/calibration_bench.py --store DIR --study YAML  # then: the report's check

With --store, the check as the report shows it (measurements/speed/roofline_section.py), read from a run's
store of the speed measurement, replaces the last section of --out; nothing is timed.

For every variant of the default study, on this CPU, in one process: the speed measurement's own timings
(measurements/speed/run.py: train_step_timing, prefill_timing, the harness's medians) of the training step and
the prefill at 1 and 2 tokens (the calibration candidates) and at 8, 16 and 64 tokens (the lengths the speed
measurement times here: 512, 2048 and 8192 mapped to the CPU's cap). The machine's peaks are measured as the
speed measurement measures them (GEMM ceiling, copy bandwidth). For each candidate the design's per-operator
cost is (median - floor) / operators at that length (roofline_check.op_cost's rule), and the calibrated
prediction at 8, 16 and 64 tokens is the floor plus that cost per operator. Both candidates read the same
timings, so the comparison is paired; each round times everything afresh.

Also timed: one matrix product of the logits' shape (20,000 x 512 weights) at 1, 2, 8, 16 and 64 rows: at
one row BLAS runs a matrix-vector product, at two or more a matrix product.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orca_analysis.build import build_model  # noqa: E402
from orca_analysis.instruments.roofline import (  # noqa: E402
    bandwidth_probe,
    floor_s,
    measured_peaks,
    overhead_probe,
)
from orca_analysis.measurements.speed.roofline_check import _ops  # noqa: E402
from orca_analysis.measurements.speed.roofline_section import forecast_check_table  # noqa: E402
from orca_analysis.measurements.speed.run import prefill_timing, train_step_timing  # noqa: E402
from orca_analysis.measurements.speed.timed import Workload, gemm_ceiling  # noqa: E402
from orca_analysis.results.query import load_results  # noqa: E402
from orca_analysis.study import load_study  # noqa: E402

CANDIDATES = (1, 2)
CHECKED = (8, 16, 64)
TIMING = {"train": train_step_timing, "prefill": prefill_timing}


def gemv_against_gemm() -> list[str]:
    w = torch.randn(20_000, 512)
    rows = ["| rows | median (ms) | weight bytes / time (GB/s) |", "|---|---|---|"]
    for m in (1, 2, 8, 16, 64):
        x = torch.randn(m, 512)
        for _ in range(5):
            F.linear(x, w)
        samples = []
        for _ in range(30):
            t = time.perf_counter()
            F.linear(x, w)
            samples.append(time.perf_counter() - t)
        med = statistics.median(samples)
        rows.append(f"| {m} | {med * 1e3:.2f} | {w.numel() * 4 / med / 1e9:.1f} |")
    return rows


def one_round(study, peaks) -> list[dict]:  # noqa: ANN001
    out = []
    for variant in study.variants():
        model = build_model(variant.config, "cpu", "float32")
        for step, timing in TIMING.items():
            at = {}
            for n in (*CANDIDATES, *CHECKED):
                ops = _ops(variant.config, step, n, 1)
                median = timing(model, variant.config, Workload(n, 1, (n,)), "cpu").median
                at[n] = (median, floor_s(ops, peaks), len(ops))
            for c in CANDIDATES:
                median, floor, ops = at[c]
                cost = max(0.0, (median - floor) / ops)
                for n in CHECKED:
                    m, f, k = at[n]
                    out.append(
                        {
                            "variant": variant.variant_id,
                            "step": step,
                            "tokens": n,
                            "calibrated_at": c,
                            "measured": m,
                            "predicted": f + k * cost,
                        }  # fmt: skip
                    )
    return out


STORE_HEAD = "## The check as the report shows it, from a run's store"


def store_check(out: Path, store: str, study: str) -> None:
    table = forecast_check_table(load_results(store), load_study(study))
    if table is None:
        raise SystemExit(f"no speed results with a floor in {store}")
    text = out.read_text().split(STORE_HEAD)[0].rstrip() + "\n\n"
    rows = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    rows += ["| " + " | ".join(str(c) for c in r) + " |" for r in table.rows]
    stamp = f"Read {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from {store} (study {study})."
    out.write_text(text + "\n".join([STORE_HEAD, "", stamp, "", table.caption, "", *rows, ""]))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/calibration.md")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--store", help="a run's store folder: write the report's check from it")
    ap.add_argument("--study", default="orca", help="the study of that run")
    args = ap.parse_args()
    if args.store:
        store_check(args.out, args.store, args.study)
        return
    torch.set_num_threads(torch.get_num_threads())
    study = load_study("orca")
    gemm, n = gemm_ceiling("cpu", "float32")
    copy, moved = bandwidth_probe("cpu")
    chain, ops = overhead_probe("cpu")
    peaks = measured_peaks("cpu", 2 * n**3 / gemm.median, moved / copy.median, chain.median / ops)
    rounds = [one_round(study, peaks) for _ in range(args.rounds)]
    lines = [
        "# The CPU time check: calibrated at one token or at two (issue 26)",
        "",
        f"Date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, 2 cores shared, "
        f"{torch.get_num_threads()} torch threads, no GPU; Python {platform.python_version()}, torch "
        f"{version('torch')}, x-transformers {version('x-transformers')}. Produced by "
        "`benchmarks/calibration_bench.py` (its docstring: the method).",
        "",
        f"Peaks measured here: GEMM ceiling {peaks.flops['float32'] / 1e9:.1f} GFLOP/s, copy bandwidth "
        f"{peaks.bandwidth / 1e9:.1f} GB/s.",
        "",
        "## Within 25% of the measured median, per round",
        "",
        "| round | calibrated at 1 token | calibrated at 2 tokens | pairs |",
        "|---|---|---|---|",
    ]
    for i, rows in enumerate(rounds, 1):
        within = {
            c: sum(abs(r["predicted"] / r["measured"] - 1) <= 0.25 for r in rows if r["calibrated_at"] == c)
            for c in CANDIDATES
        }
        pairs = len(rows) // len(CANDIDATES)
        lines.append(f"| {i} | {within[1]} of {pairs} | {within[2]} of {pairs} | {pairs} |")
    lines += [
        "",
        "## Every pair, the last round (error: predicted / measured - 1)",
        "",
        "| variant | step | tokens | measured (ms) | at 1 token (ms) | error | at 2 tokens (ms) | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    last = rounds[-1]
    for r in (r for r in last if r["calibrated_at"] == 1):
        two = next(
            q["predicted"]
            for q in last
            if q["calibrated_at"] == 2
            and (q["variant"], q["step"], q["tokens"]) == (r["variant"], r["step"], r["tokens"])
        )
        m, one = r["measured"], r["predicted"]
        lines.append(
            f"| {r['variant']} | {r['step']} | {r['tokens']} | {m * 1e3:.3g} | {one * 1e3:.3g} | "
            f"{one / m - 1:+.0%} | {two * 1e3:.3g} | {two / m - 1:+.0%} |"
        )
    lines += [
        "",
        "## One matrix product of the logits' shape (20,000 x 512 weights)",
        "",
        *gemv_against_gemm(),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
