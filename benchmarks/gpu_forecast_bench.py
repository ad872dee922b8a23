"""GPU forecast benchmark (issue 26 targets), written as Markdown.

    .venv/bin/python benchmarks/gpu_forecast_bench.py [--store reports/orca] [--out benchmarks/results/gpu_forecast.md]

1. The forecast of a run's store (`make report` writes reports/orca/results.sqlite): for the base variant and
   the recommended design, on the H100 and the H200, float32 and bfloat16: each step's simulated peak and
   whether it fits, the largest batch at the longest length, the floor and predicted step time, and the MFU
   ceiling. Read from the forecast measurement's records: the numbers the report shows.
2. The instrumented walk: the memory walk with the operator recorder against the same walk without it, on
   several designs and lengths: the peaks must be identical, the model FLOPs must equal the operator
   counter's (less ALiBi's element-wise work, which the counter adds), and the recorder's cost is timed.
3. `inspect` at 8192 tokens with and without `--device h100`, beside `import torch, x_transformers`: fresh
   processes, wall clock, medians of 3.
4. The time forecast checked on this CPU: the speed measurement's floor and prediction against its measured
   medians, every (variant, length, step) of the store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orca_analysis.devices import load_devices  # noqa: E402
from orca_analysis.instruments import memtrack  # noqa: E402
from orca_analysis.instruments.flop_counter import count_flops  # noqa: E402
from orca_analysis.instruments.roofline import model_flops  # noqa: E402
from orca_analysis.measurements.speed.roofline_section import forecast_check_table  # noqa: E402
from orca_analysis.results.query import load_results  # noqa: E402
from orca_analysis.study import load_study  # noqa: E402

GPUS = ("h100-sxm-80gb", "h200-sxm-141gb")


def _one(results, metric: str, **at):  # noqa: ANN001, ANN202
    found = results.values(metric, **at)
    return found[0].value if found else None


def forecast_table(store: str) -> list[str]:
    results = load_results(store)
    devices = load_devices()
    out = [
        "| variant | GPU | compute | step | peak (GB) | fits | largest batch at the longest length | floor (ms) "
        "| predicted (ms) | MFU ceiling: PaLM (kernel) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    longest = max((v.seq_len for v in results.values("gpu_peak")), default=None)
    for vid in ("base", "recommended", "fix:alibi-off", "fix:cache-shift-off-alibi-off"):
        for gpu in GPUS:
            for compute in ("float32", "bfloat16"):
                for step in ("train", "prefill"):
                    at = {"variant": vid, "seq_len": longest, "gpu": gpu, "compute": compute, "step": step}
                    peak = _one(results, "gpu_peak", category="total", **at)
                    if peak is None:
                        continue
                    batch = _one(results, "gpu_max_batch", **at)
                    fl, pr = (_one(results, m, **at) for m in ("gpu_step_floor", "gpu_step_predicted"))
                    palm, kernel = (
                        _one(results, "gpu_mfu_ceiling", convention=c, **at) for c in ("palm", "kernel")
                    )
                    out.append(
                        f"| {vid} | {gpu} | {compute} | {step} | {peak / 1e9:.2f} | "
                        f"{'yes' if peak <= devices[gpu].memory_bytes else 'NO'} | "
                        f"{'-' if batch is None else int(batch)} | {fl * 1e3:.3g} | {pr * 1e3:.3g} | "
                        f"{palm:.1%} ({kernel:.1%}) |"
                    )
    have = {v.variant_id for v in results.values("gpu_peak")}
    note = (
        "" if "recommended" in have else " This run has no recommended design (no remedy of the base passed)."
    )
    return [
        f"At {longest} tokens x batch 1, from the store {Path(store).name}; the largest batch is forecast for "
        f"the base only.{note}",
        "",
        *out,
    ]


def walk_checks() -> list[str]:
    out = [
        "| design | tokens x batch | peaks identical (train, prefill) | model FLOPs: walk | counter | walk "
        "without recorder (s) | with (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, n, b in (
        ("orca", 2048, 1),
        ("orca", 8192, 1),
        ("tests/fixtures/gpt2-tiny.yaml", 64, 2),
        ("tests/fixtures/llama-tiny.yaml", 64, 2),
        ("examples/llama-like.yaml", 1024, 1),
    ):
        cfg = load_study(path).base
        jobs = {(n, b): ("train", "prefill")}
        plain_s, with_s = [], []
        for _ in range(3):
            t = time.perf_counter()
            plain = memtrack.run_steps(cfg, "float32", jobs)[(n, b)]
            plain_s.append(time.perf_counter() - t)
            costs: dict = {}
            t = time.perf_counter()
            rec = memtrack.run_steps(cfg, "float32", jobs, costs=costs)[(n, b)]
            with_s.append(time.perf_counter() - t)
        same = all(
            plain[s].total == rec[s].total and plain[s].categories == rec[s].categories for s in jobs[(n, b)]
        )
        walk = model_flops("train", costs[(n, b)]["train"])
        counter = count_flops(cfg, n, b).value("train_step_model_dense")
        out.append(
            f"| {path} | {n} x {b} | {'yes' if same else 'NO'} | {walk:,} | {counter:,} | "
            f"{statistics.median(plain_s):.2f} | {statistics.median(with_s):.2f} |"
        )
    return out


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - t


def inspect_times() -> list[str]:
    py = sys.executable
    cases = {
        "import torch, x_transformers": [py, "-c", "import torch, x_transformers"],
        "inspect --seq-len 8192": [py, "-m", "orca_analysis", "inspect", "--seq-len", "8192"],
        "inspect --seq-len 8192 --device h100": [
            py,
            "-m",
            "orca_analysis",
            "inspect",
            "--seq-len",
            "8192",
            "--device",
            "h100",
        ],
    }
    times = {k: [] for k in cases}
    for _ in range(3):  # alternated, so the machine's load falls on each alike
        for k, cmd in cases.items():
            times[k].append(_wall(cmd))
    return ["| process | median wall (s) | runs (s) |", "|---|---|---|"] + [
        f"| `{k}` | {statistics.median(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} |"
        for k, v in times.items()
    ]


def cpu_check(store: str) -> list[str]:
    results = load_results(store)
    table = forecast_check_table(results, load_study("orca"))
    if table is None:
        return ["No speed results with a floor in the store."]
    rows = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    rows += ["| " + " | ".join(str(c) for c in r) + " |" for r in table.rows]
    return [table.caption, "", *rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(ROOT / "reports/orca"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_forecast.md"))
    args = ap.parse_args()
    head = (
        f"Date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, 2 cores shared, no "
        f"GPU; Python {platform.python_version()}, torch {version('torch')}, x-transformers "
        f"{version('x-transformers')}."
    )
    parts = [
        "# GPU forecast benchmark (issue 26)",
        "",
        head,
        "",
        "## The forecast: Orca, the recommended design (where a run has one) and the ALiBi remedies on the H100 and the H200",
        "",
        *forecast_table(args.store),
        "",
        "## The instrumented walk: same memory, the counter's FLOPs, its cost",
        "",
        *walk_checks(),
        "",
        "## inspect with and without a device forecast",
        "",
        *inspect_times(),
        "",
        "## The time forecast checked on this CPU",
        "",
        *cpu_check(args.store),
        "",
    ]
    Path(args.out).write_text("\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
