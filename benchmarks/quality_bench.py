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

from orca_analysis.measure._quality import proxy_rule, quality_scale
from orca_analysis.measure._recorder import parse_category
from orca_analysis.measure.probes import probe_records
from orca_analysis.measure.training import training_records
from orca_analysis.results import Record
from orca_analysis.results.records import device_name
from orca_analysis.study import load_study


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _pick(records: list[Record], metric: str, **parts: str) -> list[Record]:
    out = []
    for r in records:
        if r.metric == metric:
            cat = parse_category(r.category)
            if all(cat.get(k) == v for k, v in parts.items()):
                out.append(r)
    return out


def _one(records: list[Record], metric: str, **parts: str) -> float | None:
    found = _pick(records, metric, **parts)
    return found[0].value if found else None


def _ms(records: list[Record], metric: str, **parts: str) -> str:
    mean, spread = _one(records, metric, seed="mean", **parts), _one(records, metric, seed="spread", **parts)
    return f"{_f(mean, 4)} ± {_f(spread, 2)}" if mean is not None else "-"


def probe_table(by_variant: dict[str, list[Record]]) -> list[str]:
    cases = [
        "causality:as_built",
        "kv_cache:as_built",
        "kernel_agreement:default",
        "kernel_agreement:math",
        "kernel_agreement:flash_attention",
    ]
    lines = ["| variant | " + " | ".join(cases) + " |", "|---" * (len(cases) + 1) + "|"]
    for vid, recs in by_variant.items():
        cells = []
        for case in cases:
            metric, name = case.split(":")
            r = next(
                (r for r in recs if r.metric == metric and parse_category(r.category).get("case") == name),
                None,
            )
            cells.append("-" if r is None else f"{'pass' if r.status == 'ok' else 'FAIL'} {_f(r.value)}")
        lines.append(f"| {vid} | " + " | ".join(cells) + " |")
    return lines


def attribution_table(recs: list[Record]) -> list[str]:
    lines = ["| case | verdict | max abs diff | error |", "|---|---|---|---|"]
    for r in recs:
        if r.metric == "kv_cache":
            verdict = "pass" if r.status == "ok" else "FAIL"
            lines.append(f"| {parse_category(r.category)['case']} | {verdict} | {_f(r.value)} | {r.error} |")
    return lines


def training_table(by_variant: dict[str, list[Record]]) -> list[str]:
    lines = [
        "| variant | proxy params | FLOP/token | val loss @ equal tokens | val loss @ equal FLOPs "
        "| overfit train / val / gap |",
        "|---|---|---|---|---|---|",
    ]
    for vid, recs in by_variant.items():
        last = max(
            (r for r in recs if r.metric == "overfit_gap"),
            key=lambda r: int(parse_category(r.category)["step"]),
        )
        step = parse_category(last.category)["step"]
        tr = _one(recs, "overfit_train_loss", step=step)
        va = _one(recs, "overfit_val_loss", step=step)
        lines.append(
            f"| {vid} | {_one(recs, 'proxy_params'):,.0f} | {_one(recs, 'train_flops_per_token'):.3g} "
            f"| {_ms(recs, 'val_loss_final')} | {_ms(recs, 'val_loss_equal_flops')} "
            f"| {_f(tr, 4)} / {_f(va, 4)} / {_f(last.value, 3)} |"
        )
    return lines


def ablation_tables(recs: list[Record], lengths: list[str]) -> list[str]:
    lines = [
        "### Length extrapolation (val loss, mean ± spread over seeds)",
        "",
        "| positions | " + " | ".join(f"eval {n}" for n in lengths) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    for pos in ("alibi+xpos", "alibi", "xpos", "none"):
        lines.append(
            f"| {pos} | "
            + " | ".join(_ms(recs, "extrapolation_val_loss", pos=pos, eval_len=n) for n in lengths)
            + " |"
        )
    lines += [
        "",
        "### Multi-query vs multi-head",
        "",
        "| attention | val loss (mean ± spread) | KV cache, full model | KV cache, proxy |",
        "|---|---|---|---|",
    ]
    for attn in ("mqa", "mha"):
        full, proxy = (
            _one(recs, "kv_cache_bytes", attn=attn, scale="full"),
            _one(recs, "kv_cache_bytes", attn=attn, scale="proxy"),
        )
        lines.append(
            f"| {attn} | {_ms(recs, 'attn_kv_val_loss', attn=attn)} | {full / 2**20:.1f} MiB "
            f"| {proxy / 2**20:.2f} MiB |"
        )
    lines += [
        "",
        "### Gradient health (per-block gradient L2 norms; first block / last block)",
        "",
        "| norm | depth | init: first/last | init: min..max | late: first/last | late: min..max "
        "| train loss (last 5 steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    steps = sorted({int(parse_category(r.category)["step"]) for r in recs if r.metric == "grad_norm"})
    depths = sorted({int(parse_category(r.category)["depth"]) for r in recs if r.metric == "grad_norm"})
    for depth in depths:
        for norm in ("pre_norm", "post_norm", "deepnorm"):
            cells = []
            for step in (steps[0], steps[-1]):
                vals = [
                    r.value for r in _pick(recs, "grad_norm", norm=norm, depth=str(depth), step=str(step))
                ]
                ratio = _one(recs, "grad_norm_first_over_last", norm=norm, depth=str(depth), step=str(step))
                cells += [_f(ratio), f"{_f(min(vals))}..{_f(max(vals))}"]
            loss = _pick(recs, "grad_health_train_loss", norm=norm, depth=str(depth))[0]
            lines.append(
                f"| {norm} | {depth} | " + " | ".join(cells) + f" | {_f(loss.value, 4)} {loss.error} |"
            )
    lines.append(f"\n(init = step {steps[0]}, late = step {steps[-1]} of a short run.)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="orca")
    ap.add_argument("--scale", default=None, help="cpu or gpu (default: gpu when CUDA is present)")
    ap.add_argument("--out", default="benchmarks/results/quality.md")
    args = ap.parse_args()
    study, scale = load_study(args.study), quality_scale(args.scale)
    load_before = os.getloadavg()
    probes, training, times = {}, {}, {}
    start = time.perf_counter()
    cpu_start = time.process_time()
    for v in study.variants():
        t0, c0 = time.perf_counter(), time.process_time()
        probes[v.variant_id] = probe_records(v, study, scale)
        t1, c1 = time.perf_counter(), time.process_time()
        training[v.variant_id] = training_records(v, study, scale)
        times[v.variant_id] = (t1 - t0, c1 - c0, time.perf_counter() - t1, time.process_time() - c1)
        print(f"{v.variant_id}: " + ", ".join(f"{x:.1f}" for x in times[v.variant_id]), flush=True)
    total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
    base = study.variants()[0].variant_id
    corpus = _pick(training[base], "corpus_tokens")[0].category
    lengths = sorted(
        {
            parse_category(r.category)["eval_len"]
            for r in training[base]
            if r.metric == "extrapolation_val_loss" and "eval_len" in parse_category(r.category)
        },
        key=int,
    )
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
        *probe_table(probes),
        "",
        f"### KV-cache decoding on `{base}`: which flags break it",
        "",
        *attribution_table(probes[base]),
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
        *training_table(training),
        "",
        *ablation_tables(training[base], lengths),
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
