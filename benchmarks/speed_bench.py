"""Benchmark: the speed part of a study (kernels, attention_speed, speed) on this machine.

Target (issue 5): on the 2-core CPU the speed part of the default study finishes in under
4 minutes. Calls are made as the runner makes them: kernels and attention_speed once per
variant with all workloads, speed (isolated) once per variant and workload -- here in one
process, so the GEMM ceiling is measured once and no worker start-up is counted.

    .venv/bin/python benchmarks/speed_bench.py [--study orca] [--out benchmarks/results/speed.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from orca_analysis.instruments.device import cpu_threads, measure_device
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.results.query import Results, Value
from orca_analysis.results.records import Record, current_provenance
from orca_analysis.study import load_study
from orca_analysis.study.schema import Workloads

BUDGET_S = 240.0
NAMES = ("kernels", "attention_speed", "speed")


def run(study_ref: str) -> tuple[list[Record], dict[str, float], float]:
    study = load_study(study_ref)
    records: list[Record] = []
    seconds: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    for variant in study.variants():
        for name in NAMES:
            m, subs = MEASUREMENTS[name], [study]
            if m.schedule.per_workload and m.schedule.isolated:  # one call per workload, as the runner does
                subs = [
                    dataclasses.replace(study, workloads=Workloads([s], [b], study.workloads.dtype))
                    for s, b in study.workloads.pairs()
                ]
            for sub in subs:
                t = time.perf_counter()
                records += m.run(variant, sub)
                seconds[name] += time.perf_counter() - t
            print(f"{variant.variant_id:>9} {name:<16} {seconds[name]:6.1f} s cumulative", file=sys.stderr)
    return records, dict(seconds), time.perf_counter() - start


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}".strip()
    return f"{v:.3g} {unit}".strip()


def _first(results: Results, metric: str, **where) -> Value | None:
    """The first ok value matching, else the first error or skip (its note says why), else None."""
    found = results.values(metric, **where) or results.values(metric, status={"error", "skipped"}, **where)
    return found[0] if found else None


def _seqs(results: Results, metrics: tuple[str, ...], variant: str) -> list[int]:
    """The measured lengths at which any of `metrics` has a value or a failure."""
    return sorted(
        {v.seq_len for m in metrics for v in results.values(m, variant=variant, status=None) if v.seq_len}
    )


NOTES: list[str] = []  # distinct error texts, footnoted under the tables


def _note(text: str) -> str:
    key = re.sub(r"\[[^\]]*\]", "[..]", text)  # one note per kind of failure, not per shape
    if key not in NOTES:
        NOTES.append(key)
    return f"[{NOTES.index(key) + 1}]"


def _cell(v: Value | None, unit: str = "", pct: bool = False) -> str:
    if v is None:
        return "—"
    if v.status != "ok" or v.value is None:
        value = "" if v.value is None else f"{_fmt(v.value, unit)} "
        return f"{value}{v.status} {_note(v.note)}" if v.note else f"{value}{v.status}"
    text = f"{v.value:.1%}" if pct else _fmt(v.value, unit)
    return text + (" ⚠" if v.note.startswith("noisy") else "")


def _rate_cell(results: Results, rate: str, timed: str, **k) -> str:
    """A tokens/s rate; where the phase failed, the failure of its timing."""
    failed = results.values(timed, status="error", **k)
    return _cell(_first(results, rate, **k) or (failed[0] if failed else None))


def _cached_cell(results: Results, **k) -> str:
    """Cached decode tokens/s; where cached decoding crashed, the check's verdict and the exception."""
    rate, passed = (
        _first(results, "decode_cached_tokens_per_s", **k),
        _first(results, "decode_cache_pass", **k),
    )
    if (rate is None or rate.status != "ok") and passed is not None and passed.value == 0:
        return f"FAIL {_note(passed.note)}"
    return _cell(rate)


def markdown(results: Results, seconds: dict[str, float], total: float, study_ref: str) -> str:
    prov = current_provenance(measure_device())
    variants = list(dict.fromkeys(r.variant_id for r in results.records()))
    load = os.getloadavg()
    lines = [
        "# Speed benchmark (issue 5)",
        "",
        f"- date: {dt.date.today().isoformat()}; study: `{study_ref}`; device: {measure_device()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores; torch intra-op threads used: "
        f"{cpu_threads(measure_device())}; 1-min load average at the end: {load[0]:.1f} (other jobs share the cores)",
        f"- versions: torch {prov.torch}, x-transformers {prov.x_transformers}, python {prov.python}; "
        f"git {prov.git_commit}",
        f"- target: speed part of the study under {BUDGET_S:.0f} s on this CPU -> **{total:.0f} s, "
        f"{'PASS' if total < BUDGET_S else 'FAIL'}** (kernels {seconds.get('kernels', 0):.0f} s, "
        f"attention_speed {seconds.get('attention_speed', 0):.0f} s, speed {seconds.get('speed', 0):.0f} s)",
        "- ⚠ = the harness flagged the median as noisy (IQR > 10% of the median). Timings on a shared "
        "CPU; CPU sequence lengths are the study's scaled by cap/max_seq_len (see records `seq_len_requested`).",
        "",
        "## Kernel truth (which SDPA backend ran; which are eligible)",
        "",
        "| variant | seq | ran (train) | ran (inference) | attn_mask | eligible (inference) | not applicable |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        for seq in _seqs(results, ("ran_train", "ran_inference"), v):
            k = dict(variant=v, seq_len=seq)
            ran = {
                m: ", ".join(f"{x.get('backend')}×{x.value:g}" for x in results.values(m, **k))
                for m in ("ran_train", "ran_inference")
            }
            mask = _first(results, "sdpa_attn_mask_bytes", **k)
            ok = ", ".join(
                x.get("backend") for x in results.values("eligible_inference", **k) if x.value == 1
            )
            na = ", ".join(
                x.get("backend") for x in results.values("eligible_inference", status="skipped", **k)
            )
            mask_text = (
                f"{mask.get('mask')}, {_fmt(mask.value, 'B')}" if mask and mask.value is not None else "—"
            )
            lines.append(
                f"| {v} | {seq} | {ran['ran_train']} | {ran['ran_inference']} | {mask_text} | {ok} | {na} |"
            )
    lines += [
        "",
        "## Attention forward by backend (useful FLOP/s, 4·b·h·n²·d halved for causal)",
        "",
        "| variant | seq | flash with ALiBi bias | flash no bias | math with bias | math no bias | "
        "best / GEMM ceiling (with bias) |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        for seq in _seqs(results, ("sdpa_forward_flops", "sdpa_forward_time"), v):
            k = dict(variant=v, seq_len=seq)
            cells = [
                _cell(_first(results, "sdpa_forward_flops_per_s", case=c, backend=b, **k), "FLOP/s")
                for b in ("flash", "math")
                for c in ("with_bias", "no_bias")
            ]
            best = _first(results, "sdpa_best_vs_gemm", case="with_bias", **k)
            best_text = f"{best.get('backend')}: {best.value:.1%}" if best and best.value is not None else "—"
            lines.append(f"| {v} | {seq} | {' | '.join(cells)} | {best_text} |")
    gemm = _first(results, "gemm_ceiling")
    lines += [
        "",
        f"## End-to-end (GEMM ceiling: {_cell(gemm, 'FLOP/s')}, {gemm.get('size') if gemm else ''})",
        "",
        "| variant | seq | train tokens/s | prefill tokens/s | decode cached tokens/s | decode uncached tokens/s "
        "| train util. vs GEMM | prefill util. vs GEMM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    speed = (
        "train_step_time",
        "train_tokens_per_s",
        "prefill_time",
        "prefill_tokens_per_s",
        "decode_cache_pass",
    )
    for v in variants:
        for seq in _seqs(results, speed, v):
            k = dict(variant=v, seq_len=seq)
            row = [
                _rate_cell(results, "train_tokens_per_s", "train_step_time", **k),
                _rate_cell(results, "prefill_tokens_per_s", "prefill_time", **k),
                _cached_cell(results, **k),
                _cell(_first(results, "decode_uncached_tokens_per_s", **k)),
            ]
            row += [
                _cell(_first(results, m, method="mfu_palm", **k), pct=True)
                for m in ("train_utilisation_vs_gemm", "prefill_utilisation_vs_gemm")
            ]
            lines.append(f"| {v} | {seq} | {' | '.join(row)} |")
    lines += [
        "",
        "Utilisation numerator: MFU on PaLM's convention, the operator counter's model FLOPs at the length "
        "timed (train_step_model_dense per training step, every pair, no recompute; forward_dense per "
        "prefill; AdamW's elementwise work not counted). The report also gives the causal-aware MFU and HFU.",
        "",
    ]
    lines += [f"[{i}] {text}" + "  " for i, text in enumerate(NOTES, 1)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="orca")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    records, seconds, total = run(args.study)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(Results.from_records(records), seconds, total, args.study))
    print(f"{total:.0f} s; wrote {args.out}", file=sys.stderr)
    return 0 if total < BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
