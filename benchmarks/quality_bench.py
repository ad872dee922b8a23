"""Quality benchmark: probes + training for every variant of a study, timed, written as Markdown.

    .venv/bin/python benchmarks/quality_bench.py [--study orca] [--scale cpu] [--out benchmarks/results/quality.md]

The target: at the `cpu` scale the default study's probes and training fit in about 3 minutes
of a 2-core machine (they are part of `make report`). The tables are the numbers it produced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from importlib.metadata import version
from pathlib import Path

import torch

from orca_analysis.instruments.proxy import proxy_rule, quality_scale, tiny_scale
from orca_analysis.measurements.probes.run import probe_records
from orca_analysis.measurements.training.run import training_records
from orca_analysis.results.query import Results, Value
from orca_analysis.results.records import device_name
from orca_analysis.study import load_study


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _ms(v: Value | None) -> str:
    """mean ± (max - min) over the seeds."""
    return f"{_f(v.value, 4)} ± {_f(v.spread, 2)}" if v is not None and v.value is not None else "-"


def probe_table(results: Results, variants: list[str]) -> list[str]:
    cases = [
        "causality:as_built",
        "kv_cache:as_built",
        "kernel_agreement:default",
        "kernel_agreement:math",
        "kernel_agreement:flash_attention",
    ]
    lines = ["| variant | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for vid in variants:
        cells = []
        for case in cases:
            probe, name = case.split(":")
            passed = results.one(probe, variant=vid, case=name, status=None)
            diff = results.number(f"{probe}_max_diff", variant=vid, case=name)
            if passed is None:
                cells.append("-")
            elif passed.status != "ok":
                cells.append(passed.status)
            else:
                cells.append(f"{'pass' if passed.value == 1 else 'FAIL'} {_f(diff)}")
        lines.append(f"| {vid} | " + " | ".join(cells) + " |")
    return lines


def attribution_table(results: Results, base: str) -> list[str]:
    lines = ["| case | verdict | max abs diff | error |", "|---|---|---|---|"]
    for v in results.values("kv_cache", variant=base, status=None):
        case, ok = v.get("case"), v.status == "ok" and v.value == 1
        verdict = "pass" if ok else "FAIL" if v.status == "ok" else v.status
        diff = results.number("kv_cache_max_diff", variant=base, case=case)
        lines.append(f"| {case} | {verdict} | {_f(diff)} | {'' if ok else v.note} |")
    return lines


def training_table(results: Results, variants: list[str]) -> list[str]:
    lines = [
        "| variant | proxy params | FLOP/token | val loss @ equal tokens | val loss @ equal FLOPs "
        "| overfit train / val / gap |",
        "|---|---|---|---|---|---|",
    ]
    for vid in variants:
        last = max(results.values("overfit_gap", variant=vid), key=lambda v: int(v.get("step")))
        step = last.get("step")
        tr = results.number("overfit_train_loss", variant=vid, step=step)
        va = results.number("overfit_val_loss", variant=vid, step=step)
        lines.append(
            f"| {vid} | {results.number('proxy_params', variant=vid):,.0f} "
            f"| {results.number('train_flops_per_token', variant=vid):.3g} "
            f"| {_ms(results.one('val_loss_final', variant=vid))} "
            f"| {_ms(results.one('val_loss_equal_flops', variant=vid))} "
            f"| {_f(tr, 4)} / {_f(va, 4)} / {_f(last.value, 3)} |"
        )
    return lines


def ablation_tables(results: Results, base: str) -> list[str]:
    lengths = sorted({int(v.get("eval_len")) for v in results.values("extrapolation_val_loss", variant=base)})
    lines = [
        "### Length extrapolation (val loss, mean ± spread over seeds)",
        "",
        "| positions | " + " | ".join(f"eval {n}" for n in lengths) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    for pos in ("alibi+xpos", "alibi", "xpos", "none"):
        cells = [
            _ms(results.one("extrapolation_val_loss", variant=base, pos=pos, eval_len=n)) for n in lengths
        ]
        lines.append(f"| {pos} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Multi-query vs multi-head",
        "",
        "| attention | val loss (mean ± spread) | KV cache, full model | KV cache, proxy |",
        "|---|---|---|---|",
    ]
    for attn in ("mqa", "mha"):
        full, proxy = (
            results.number("kv_cache_bytes", variant=base, attn=attn, model="full"),
            results.number("kv_cache_bytes", variant=base, attn=attn, model="proxy"),
        )
        lines.append(
            f"| {attn} | {_ms(results.one('attn_kv_val_loss', variant=base, attn=attn))} "
            f"| {full / 2**20:.1f} MiB | {proxy / 2**20:.2f} MiB |"
        )
    lines += [
        "",
        "### Gradient health (per-block gradient L2 norms; first block / last block)",
        "",
        "| norm | depth | init: first/last | init: min..max | late: first/last | late: min..max "
        "| train loss (last 5 steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    norms = results.values("grad_norm", variant=base)
    steps = sorted({int(v.get("step")) for v in norms})
    depths = sorted({int(v.get("depth")) for v in norms})
    for depth in depths:
        for norm in ("pre_norm", "post_norm", "deepnorm"):
            cells = []
            for step in (steps[0], steps[-1]):
                at = {"variant": base, "norm": norm, "depth": depth, "step": step}
                vals = [v.value for v in results.values("grad_norm", **at)]
                ratio = results.number("grad_norm_first_over_last", **at)
                cells += [_f(ratio), f"{_f(min(vals))}..{_f(max(vals))}"]
            loss = results.one("grad_health_train_loss", variant=base, norm=norm, depth=depth, status=None)
            why = "" if loss.status == "ok" else loss.note
            lines.append(f"| {norm} | {depth} | " + " | ".join(cells) + f" | {_f(loss.value, 4)} {why} |")
    lines.append(f"\n(init = step {steps[0]}, late = step {steps[-1]} of a short run.)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="orca")
    ap.add_argument(
        "--scale",
        default=None,
        help="cpu or gpu (default: gpu when CUDA is present); tiny: a quick smoke test",
    )
    ap.add_argument("--out", default="benchmarks/results/quality.md")
    args = ap.parse_args()
    study = load_study(args.study)
    scale = tiny_scale() if args.scale == "tiny" else quality_scale(args.scale)
    load_before = os.getloadavg()
    records, times = [], {}
    start = time.perf_counter()
    cpu_start = time.process_time()
    for v in study.variants():
        t0, c0 = time.perf_counter(), time.process_time()
        records += probe_records(v, study, scale)
        t1, c1 = time.perf_counter(), time.process_time()
        records += training_records(v, study, scale)
        times[v.variant_id] = (t1 - t0, c1 - c0, time.perf_counter() - t1, time.process_time() - c1)
        print(f"{v.variant_id}: " + ", ".join(f"{x:.1f}" for x in times[v.variant_id]), flush=True)
    total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
    results, variants = Results.from_records(records), list(times)
    base = variants[0]
    corpus_v = results.one("corpus_tokens", variant=base)
    corpus = ",".join([*(f"{k}={x}" for k, x in corpus_v.labels.items()), corpus_v.note])
    lines = [
        f"# Quality benchmark: study `{study.name}`, scale `{scale.name}`",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- machine: {device_name(scale.device)}, {os.cpu_count()} cores; "
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (other work shared the cores)",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"x-transformers {version('x-transformers')}, torch threads per run {scale.threads}",
        f"- scale: {proxy_rule(scale)}; train length {scale.seq_len}, batch {scale.batch}, {scale.steps} steps "
        f"({scale.tokens_per_run:,} tokens per run), lr {scale.lr} (warm-up {scale.warmup} then constant), "
        f"seeds {list(scale.seeds)}",
        f"- corpus: {corpus}",
        "- losses in nats per token (bytes at this scale); `x ± s` = mean ± (max - min) over seeds",
        "",
        f"## Time: {total:.0f} s wall, {cpu_total:.0f} s CPU (target: about 180 s on an idle 2-core machine)",
        "",
        "Runs use one torch thread, so CPU time is about what the same work takes on an idle machine;",
        "wall time grows with whatever else shares the cores.",
        "",
        "| variant | probes wall (s) | probes CPU (s) | training wall (s) | training CPU (s) |",
        "|---|---|---|---|---|",
        *[f"| {vid} | " + " | ".join(f"{x:.1f}" for x in t) + " |" for vid, t in times.items()],
        "",
        "## Probes (value = max abs logit difference)",
        "",
        *probe_table(results, variants),
        "",
        f"### KV-cache decoding on `{base}`: which flags break it",
        "",
        *attribution_table(results, base),
        "",
        "## Training: what dim, depth and heads buy",
        "",
        f"- equal tokens: every variant trains on {scale.tokens_per_run:,} tokens; the loss at the end.",
        "- equal FLOPs: the loss when the variant has spent as many training FLOPs (6N + 6·L·T·d_attn,",
        "  Kaplan et al. 2020) as the cheapest variant's whole run; read from the same run (the learning",
        "  rate is constant after warm-up, so a mid-run point is not one caught mid-schedule).",
        f"- overfit: seed {scale.seeds[0]}, {scale.overfit_steps} steps on the first {scale.overfit_tokens:,} "
        f"training tokens ({scale.overfit_steps * scale.batch * scale.seq_len // scale.overfit_tokens} epochs); "
        "losses at the end.",
        "",
        *training_table(results, variants),
        "",
        *ablation_tables(results, base),
        "",
        "## Notes",
        "",
        "- Ablations (extrapolation, attention, gradients) are run around the base variant's proxy; the",
        "  ALiBi + xPos and MQA rows reuse the base variant's own runs.",
        *(
            [
                f"- Short proxy runs barely use long context (and their heads are {scale.divisor}x narrower, so xPos",
                "  rotates few dims): a flat extrapolation table at this scale is not evidence about the full",
                "  model. The `gpu` scale trains the full shapes.",
            ]
            if scale.divisor > 1
            else []
        ),
        "- Gradient norms: pre-clipping L2 norm of each decoder block's gradient (attention + feed-forward);",
        "  post_norm = DeepNorm's post-LN layout without its alpha and beta; pre_norm is the reference.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out} ({total:.0f} s)")


if __name__ == "__main__":
    main()
