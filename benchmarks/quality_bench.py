"""Quality benchmark: where the training measurement's time goes, and the power each proxy test reached.

    .venv/bin/python benchmarks/quality_bench.py [--study orca] [--scale cpu|thorough] [--workers 2]
                                                 [--out benchmarks/results/quality.md]

Trains every variant of the study that `run` trains (the sweep and the remedies that list `training`) in
`--workers` processes, longest first, as `run` does, and times each kind of sub-run by the function that
starts it (equal-token runs, learning-rate sweep, equal-FLOP runs, small-subset runs, the extrapolation
arms and their scoring, the multi-head arm, gradient health, head ablation, the read criterion). Then it
evaluates the catalogue's training claims and each remedy's loss change on those records: the effect, its
interval, n, the minimal detectable effect (claims/stats.py) and the positive control's effect.

The target (issue 24): the standard tier's training within 8 minutes of wall time on 2 cores.
With `--before-tree PATH` it times an older checkout's training measurement the same way (its code on
sys.path first), for the before/after table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

CATEGORIES = {  # the function that starts a sub-run -> what it is
    "main_runs": "equal-token runs",
    "variant_runs": "equal-token runs",
    "remedy_runs": "equal-token runs",
    "tuned_runs": "learning-rate sweep",
    "equal_flop_runs": "equal-FLOP runs",
    "equal_budget_run": "equal-FLOP runs",
    "overfit": "small-subset runs",
    "model_for": "extrapolation and multi-head arms",
    "grad_health": "gradient health",
    "head_ablation": "head ablation",
    "context_losses": "extrapolation scoring",
    "ngram_loss": "read criterion (bigram count model)",
}


def _timed(fn, name, clock):
    def wrapper(*args, **kwargs):
        caller = sys._getframe(1).f_code.co_name
        what = CATEGORIES.get(name) or CATEGORIES.get(caller, f"other ({caller})")
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[what] += time.process_time() - t0

    return wrapper


def train_one(study_ref: str, variant_id: str, scale_name: str, tree: str | None) -> tuple:
    """One variant's training records and the CPU seconds by kind of sub-run (in a worker process)."""
    if tree:
        sys.path.insert(0, tree)
    from orca_analysis.instruments.proxy import quality_scale
    from orca_analysis.measurements.training import ablations
    from orca_analysis.measurements.training import run as training
    from orca_analysis.study import load_study

    study = load_study(study_ref)
    variant = next(v for v in [*study.variants(), *study.remedy_variants()] if v.variant_id == variant_id)
    clock: dict[str, float] = defaultdict(float)
    modules = [training, ablations]
    try:
        from orca_analysis.measurements.training import arms

        modules.append(arms)
    except ImportError:  # an older tree
        pass
    for module in modules:
        for name in ("train_run", "head_ablation", "context_losses", "ngram_loss"):
            if hasattr(module, name):  # train_run: by its caller; the rest: by their own name
                setattr(
                    module, name, _timed(getattr(module, name), "" if name == "train_run" else name, clock)
                )
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        records = training.training_records(variant, study, quality_scale(scale_name))
    except Exception as exc:  # noqa: BLE001  (as `run` does: a failed measurement is recorded, the rest goes on)
        print(f"{variant_id}: {type(exc).__name__}: {str(exc)[:120]}", flush=True)
        records = []
    cpu = time.process_time() - c0
    clock["other (set-up, corpus, counting)"] += cpu - sum(clock.values())
    return variant_id, records, dict(clock), time.perf_counter() - t0, cpu


def measure(study_ref: str, scale_name: str, workers: int, tree: str | None) -> tuple:
    if tree:
        sys.path.insert(0, tree)
    from orca_analysis.study import load_study

    study = load_study(study_ref)
    remedies = [v for v in study.remedy_variants() if "training" in (v.only or ("training",))]
    order = [study.variants()[0], *remedies, *study.variants()[1:]]  # the base first: it is the longest
    start = time.perf_counter()
    out = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_one, study_ref, v.variant_id, scale_name, tree) for v in order]
        for f in as_completed(futures):
            vid, records, clock, wall, cpu = f.result()
            print(f"{vid}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
            out.append((vid, records, clock, wall, cpu))
    return out, time.perf_counter() - start


def time_table(runs: list, wall: float) -> list[str]:
    total: dict[str, float] = defaultdict(float)
    for _, _, clock, _, _ in runs:
        for k, v in clock.items():
            total[k] += v
    cpu = sum(r[4] for r in runs)
    lines = ["| kind of sub-run | CPU s | share |", "|---|---|---|"]
    for k, v in sorted(total.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {v:.1f} | {v / cpu:.0%} |")
    lines += [
        f"| **all** | **{cpu:.1f}** | 100% |",
        "",
        f"Wall time: {wall:.1f} s.",
        "",
        "| variant | wall s | CPU s |",
        "|---|---|---|",
    ]
    lines += [f"| {vid} | {w:.1f} | {c:.1f} |" for vid, _, _, w, c in sorted(runs, key=lambda r: -r[4])]
    return lines


def _ci(e) -> str:
    if e is None:
        return "-"
    if e.ci_low is None:
        return f"{e.estimate:+.4f} (n={e.n}, no interval)"
    return f"{e.estimate:+.4f} [{e.ci_low:+.4f}, {e.ci_high:+.4f}]"


def power_table(study_ref: str, records: list) -> list[str]:
    from orca_analysis.claims import evaluate, load_catalogue
    from orca_analysis.claims.evidence import compare
    from orca_analysis.results.query import Results
    from orca_analysis.study import load_study

    study = load_study(study_ref)
    results = Results.from_records(records)
    sweep = results.only_variants({v.variant_id for v in study.variants()})
    claims = [c for c in load_catalogue() if "training" in c.tests]
    lines = [
        "| claim | verdict | effect [95% CI] | interval | n | MDE | delta | positive control [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cr in evaluate(claims, sweep, study):
        v, e = cr.verdict, cr.verdict.effect
        control = f"{v.control.name}: {_ci(v.control.effect)}" if v.control else "-"
        mde = f"{e.mde:.4f}" if e is not None and e.mde is not None else "-"
        kind = e.method.split(",")[0] if e is not None else "-"
        lines.append(
            f"| {cr.claim.id} | {v.verdict} | {_ci(e)} | {kind} | {e.n if e else '-'} | {mde} | "
            f"{v.delta if v.delta is not None else '-'} | {control} |"
        )
    lines += [
        "",
        "Remedies' loss change, after - before, paired by seed (nats/token):",
        "",
        "| remedy | before | after | change [95% CI] | MDE |",
        "|---|---|---|---|---|",
    ]
    for r in study.fixes:
        b = results.one("val_loss_final", variant=r.applies_to)
        a = results.values("val_loss_final", variant=r.variant_id)
        if b is None or not a:
            why = results.values("val_loss_final", variant=r.variant_id, status=None)
            lines.append(f"| {r.id} | - | - | {why[0].note[:90] if why else 'not trained'} | - |")
            continue
        e = compare([a[0], b], [1.0, -1.0])
        lines.append(f"| {r.id} | {b.value:.4f} | {a[0].value:.4f} | {_ci(e)} | {e.mde:.4f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="orca")
    ap.add_argument("--scale", default="cpu", help="cpu (the standard tier) or thorough")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--before-tree", default=None, help="time an older checkout's training measurement instead"
    )
    ap.add_argument("--out", default="benchmarks/results/quality.md")
    ap.add_argument("--json", default=None, help="also write the timings as JSON here")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    runs, wall = measure(args.study, args.scale, args.workers, args.before_tree)
    records = [r for _, recs, _, _, _ in runs for r in recs]
    title = "before (" + args.before_tree + ")" if args.before_tree else f"scale `{args.scale}`"
    lines = [
        f"## Training measurement, study `{args.study}`, {title}",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; {os.cpu_count()} cores, "
        f"{args.workers} worker processes, one torch thread each; load average before {load_before:.2f}",
        f"- python {platform.python_version()}",
        "",
        *time_table(runs, wall),
    ]
    if not args.before_tree:
        lines += ["", "### Power of each test", "", *power_table(args.study, records)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps({vid: {"clock": c, "wall": w, "cpu": cpu} for vid, _, c, w, cpu in runs}, indent=1)
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
