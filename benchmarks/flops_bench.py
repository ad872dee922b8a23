"""FLOP benchmark (issue 3 targets), written as Markdown.

    .venv/bin/python benchmarks/flops_bench.py [--out benchmarks/results/flops.md] [--skip-study]

Each case runs in a fresh interpreter, so its peak resident memory (ru_maxrss) is its own; times
start after the imports. Cases:
- ours: the whole FLOP analysis of the Orca base at 8192 tokens (operator counter, forward and
  training step, dense and causal, by component, on the storage-less model; closed form; estimates).
- fvcore: plain fvcore as a new user runs it, FlopCountAnalysis(model, tokens).total() on real
  float32 weights at 8192 tokens, under torch.no_grad() (the model build is timed apart). Without
  no_grad it is slower still: 158 s wall and 17.8 GB peak here, once, as the trace keeps each
  layer's (b, h, n, n) ALiBi bias for a backward.
- 55B: dim 8192, depth 80, heads 64, head dim 128, 8 kv heads, 8192 tokens, the whole analysis.
Then, in this process: counter vs closed form for every variant of the default study at 512, 2048
and 8192 tokens, and the wall time of the registered `flops` measurement over the whole study.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

METRICS = ("forward_dense", "forward_causal", "train_step_dense", "train_step_causal")
B55 = {
    "dim": 8192,
    "depth": 80,
    "heads": 64,
    "attn_dim_head": 128,
    "attn_kv_heads": 8,
    "attn_one_kv_head": False,
}


def _config(case: str):
    from orca_analysis.study import load_study

    base = load_study("orca", {}).base
    return base if case != "55b" else base.with_values({("attn_layers", k): v for k, v in B55.items()})


def child(case: str) -> dict:
    """One case, in this (fresh) process: seconds, CPU seconds and peak RSS, with its numbers."""
    import torch

    from orca_analysis.build import build_model
    from orca_analysis.formulas.flops import closed_form_flops, kaplan_6n, palm
    from orca_analysis.instruments.flop_counter import count_flops

    cfg, n, out = _config(case), 8192, {}
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def timed(fn, key: str) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out[key], out[key.replace("seconds", "cpu_seconds")] = (
            time.perf_counter() - t0,
            time.process_time() - c0,
        )

    if case == "fvcore":
        from fvcore.nn import FlopCountAnalysis

        model = build_model(cfg, "cpu", "float32").eval()
        fa = FlopCountAnalysis(model, torch.randint(0, cfg.num_tokens, (1, n)))
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with torch.no_grad():  # the kinder baseline: with autograd on, the trace keeps every layer's bias
            timed(lambda: out.update(fvcore_as_shipped=fa.total()), "seconds")
        out["unsupported"] = dict(fa.unsupported_ops())
    else:

        def analyse() -> None:
            count = count_flops(cfg, n, 1)
            closed = {m: closed_form_flops(cfg, n, 1, m.endswith("causal"))["total"] for m in METRICS}
            out["counter"] = {m: count.value(m) for m in METRICS}
            out["closed_form"] = {
                m: getattr(closed[m], "forward" if m.startswith("forward") else "train_step") for m in METRICS
            }
            out["plain_flop_counter_mode"] = count.plain["forward"] + count.plain["backward"]
            out["kaplan_6n"], out["palm"] = kaplan_6n(cfg, n, 1).train_step, palm(cfg, n, 1).train_step

        timed(
            analyse, "seconds"
        )  # cold: a fresh process's first analysis (einx compiles its ALiBi expression)
        timed(analyse, "warm_seconds")  # warm: the next variant or workload in the same process
    out.update(
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        import_rss=rss0,
        load=os.getloadavg()[0],
    )
    return out


def run_child(case: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", case], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def study_agreement() -> tuple[list[list[str]], float, float]:
    """Counter vs closed form, every variant x workload of the default study; the worst |difference|."""
    from orca_analysis.formulas.flops import closed_form_flops
    from orca_analysis.instruments.flop_counter import count_flops
    from orca_analysis.study import load_study

    study, rows, worst, t0 = load_study("orca", {}), [], 0.0, time.perf_counter()
    for v in study.variants():
        for n in study.workloads.seq_lens:
            count = count_flops(v.config, n, 1)
            cells = [v.variant_id, str(n)]
            for m in METRICS:
                expected = getattr(
                    closed_form_flops(v.config, n, 1, m.endswith("causal"))["total"],
                    "forward" if "forward" in m else "train_step",
                )
                diff = (count.value(m) - expected) / expected
                worst = max(worst, abs(diff))
                cells.append(f"{count.value(m):.4e} ({diff:+.2%})")
            plain = count.plain["forward"] + count.plain["backward"]
            cells.append(f"{1 - plain / count.value('train_step_dense'):.1%}")
            rows.append(cells)
    return rows, worst, time.perf_counter() - t0


def whole_measurement() -> tuple[float, int, list[str]]:
    from orca_analysis.measurements.flops.run import measure_flops
    from orca_analysis.results.query import Results
    from orca_analysis.study import load_study

    study, t0 = load_study("orca", {}), time.perf_counter()
    records = [r for v in study.variants() for r in measure_flops(v, study)]
    seconds = time.perf_counter() - t0
    fvcore = Results.from_records(records).values("forward_dense", method="fvcore", component="total")
    ran = sorted({f"{v.variant_id}@{v.seq_len}" for v in fvcore})
    return seconds, len(records), ran


def table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        [
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    )


def _row(name: str, r: dict, result: str) -> list[str]:
    warm = f"{r['warm_seconds']:.2f} / {r['warm_cpu_seconds']:.2f}" if "warm_seconds" in r else "-"
    return [
        name,
        f"{r['seconds']:.2f} / {r['cpu_seconds']:.2f}",
        warm,
        f"{r['peak_rss'] / 2**30:.2f}",
        f"{r['load']:.1f}",
        result,
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--out", default="benchmarks/results/flops.md")
    ap.add_argument("--skip-study", action="store_true", help="only the three timed cases")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    ours, fv = run_child("ours"), run_child("fvcore")
    bigs = sorted(
        (run_child("55b") for _ in range(3)), key=lambda r: r["seconds"]
    )  # wall time swings with load
    big = bigs[1]  # the median run
    gib, attn = 2**30, fv["unsupported"].get("aten::scaled_dot_product_attention", 0)
    ratio = {k: fv[k] / ours[k] for k in ("seconds", "cpu_seconds")}
    warm = {k: fv[k] / ours[f"warm_{k}"] for k in ("seconds", "cpu_seconds")}
    step = "train_step_causal {:.4e} FLOP".format
    plain_fv = 2 * fv["fvcore_as_shipped"]
    lines = [
        "# FLOP analysis benchmark",
        "",
        f"Date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / gib:.0f} GiB; "
        f"torch {version('torch')}, x-transformers {version('x-transformers')}, fvcore {version('fvcore')}, "
        f"Python {platform.python_version()}. Produced by `benchmarks/flops_bench.py`. The machine is shared "
        "(load average, 1 min, in each row), so wall time exceeds CPU time. Cold: a fresh process's first "
        "analysis (it includes einx compiling the ALiBi expression with sympy, about 0.7 s); warm: a second "
        f"one in the same process. Peak RSS is the whole process ({ours['import_rss'] / gib:.2f} GiB of it "
        "is the Python, torch and x-transformers imports).",
        "",
        "## Orca at 8192 tokens, and the 55B variant",
        "",
        table(
            ["case", "cold wall / CPU s", "warm wall / CPU s", "peak RSS GiB", "load", "result"],
            [
                _row("ours: Orca base, whole analysis", ours, step(ours["counter"]["train_step_causal"])),
                _row(
                    "plain fvcore, real weights, no_grad",
                    fv,
                    f"{fv['fvcore_as_shipped']:.4e} (1 per multiply-add; "
                    f"scaled_dot_product_attention unsupported x{attn})",
                ),
                *(
                    _row(
                        f"ours: 55B variant, whole analysis ({i} of 3)",
                        r,
                        step(r["counter"]["train_step_causal"]),
                    )
                    for i, r in enumerate(bigs, 1)
                ),
            ],
        ),
        "",
        f"- Speed vs plain fvcore (target at least 50x): cold {ratio['seconds']:.0f}x wall, "
        f"{ratio['cpu_seconds']:.0f}x CPU; warm {warm['seconds']:.0f}x wall, {warm['cpu_seconds']:.0f}x CPU.",
        f"- Peak memory (target at most 1/10): {ours['peak_rss'] / fv['peak_rss']:.3f} of fvcore's, "
        f"1/{fv['peak_rss'] / ours['peak_rss']:.0f}.",
        f"- 55B (targets under 10 s, under 1 GiB), three fresh processes: cold wall {bigs[0]['seconds']:.2f} / "
        f"{big['seconds']:.2f} / {bigs[2]['seconds']:.2f} s (fastest / median / slowest), median CPU "
        f"{big['cpu_seconds']:.2f} s; warm median {big['warm_seconds']:.2f} s wall, {big['warm_cpu_seconds']:.2f} s "
        f"CPU; peak RSS at most {max(r['peak_rss'] for r in bigs) / gib:.2f} GiB. CPU time is what the work costs "
        "on an idle 2-core machine; wall time adds the wait for cores other sessions hold.",
        f"- What the plain tools miss at Orca 8192: plain fvcore (converted, x2) {plain_fv:.4e} FLOP vs "
        f"{ours['counter']['forward_dense']:.4e} forward dense, {1 - plain_fv / ours['counter']['forward_dense']:.1%} "
        f"missing; plain FlopCounterMode {ours['plain_flop_counter_mode']:.4e} vs "
        f"{ours['counter']['train_step_dense']:.4e} training step dense, "
        f"{1 - ours['plain_flop_counter_mode'] / ours['counter']['train_step_dense']:.1%} missing.",
        "",
        table(
            ["FLOP at 8192 tokens", *METRICS],
            [
                ["Orca counter", *(f"{ours['counter'][m]:.6e}" for m in METRICS)],
                ["Orca closed form", *(f"{ours['closed_form'][m]:.6e}" for m in METRICS)],
                ["55B counter", *(f"{big['counter'][m]:.6e}" for m in METRICS)],
                ["55B closed form", *(f"{big['closed_form'][m]:.6e}" for m in METRICS)],
            ],
        ),
        "",
        f"Estimates per training step at 8192 tokens: Orca Kaplan 6N {ours['kaplan_6n']:.4e}, PaLM "
        f"{ours['palm']:.4e}; 55B Kaplan 6N {big['kaplan_6n']:.4e}, PaLM {big['palm']:.4e}.",
    ]
    if not args.skip_study:
        rows, worst, secs = study_agreement()
        total, n_records, ran = whole_measurement()
        lines += [
            "",
            "## Counter vs closed form, every variant of the default study",
            "",
            f"Counter value (relative difference to the closed form); worst |difference| {worst:.2e} (target: "
            f"under 1%); {secs:.1f} s for the {len(rows)} counts, one process. Last column: what plain "
            "FlopCounterMode misses of the dense training step.",
            "",
            table(["variant", "tokens", *METRICS, "plain misses"], rows),
            "",
            "## The registered `flops` measurement over the whole default study",
            "",
            f"{total:.1f} s wall for 7 variants x 3 workloads ({n_records} records, load "
            f"{os.getloadavg()[0]:.1f}); fvcore ran on real weights for {', '.join(ran)} and is recorded "
            "`skipped`, with its reason, elsewhere.",
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
