"""Memory: closed form, simulated (no allocation) and measured, training and inference (measurement `memory`)."""

from __future__ import annotations

import pandas as pd

from ..figures import lines, stacked
from . import Section, Table, mib, ok_rows, pct, pick, value, variant_order

PARTS = ("parameters", "gradients", "optimizer_state", "activations", "temporaries", "inputs", "buffers")


def _fits(rows: pd.DataFrame, metric: str, vid: str, seq: float) -> str:
    marks = []
    for cat in ("80GB", "141GB"):
        v = value(rows, variant_id=vid, seq_len=seq, metric=metric, category=cat)
        marks.append(f"{cat}: {'n/a' if v is None else 'yes' if v else 'NO'}")
    return ", ".join(marks)


def memory_section(results: pd.DataFrame, study) -> Section:
    rows = ok_rows(results, "memory")
    section = Section(
        "memory",
        "Memory",
        "Closed form (formulas/memory.py, from Korthikanti et al. 2022 adapted "
        "to what x-transformers keeps), simulated (the real training step and inference run on the "
        "no-allocation build under torch's MemTracker) and, where shapes fit, measured with real "
        "tensors. AdamW, the study's dtype, batch as in the study.",
    )
    if rows.empty:
        section.missing = "no `memory` results: add `memory` to the study's measurements and run it"
        return section
    top = rows["seq_len"].max()
    table = []
    for vid in variant_order(study):
        for seq in study.workloads.seq_lens:  # the study's lengths; the figure shows the whole sweep
            r = pick(rows, variant_id=vid, seq_len=seq)
            whole = r[r["category"] == ""]
            cf, sim = (value(whole, metric="peak_train", method=m) for m in ("closed_form", "simulated"))
            pcf, psim = (value(whole, metric="peak_prefill", method=m) for m in ("closed_form", "simulated"))
            table.append(
                [
                    vid,
                    f"{int(seq)}",
                    mib(cf),
                    mib(sim),
                    pct(cf / sim - 1 if cf and sim else None),
                    mib(pcf),
                    mib(psim),
                    mib(value(whole, metric="kv_cache", method="closed_form")),
                    mib(value(whole, metric="cache_object", method="closed_form")),
                    _fits(rows, "fits_train", vid, seq),
                ]
            )
    section.tables.append(
        Table(
            "Training-step and inference peaks",
            "Peak bytes of a training step (forward, backward, AdamW step) and of a prefill; the KV cache is layers x "
            "kv heads x head dim x tokens x batch x 2 (K and V) x bytes; the x-transformers cache object is what its "
            "generation cache really keeps. Error = closed form / simulated - 1. Fit is judged from the closed form "
            "alone, without trying.",
            [
                "variant",
                "seq len (tokens)",
                "train peak, closed form",
                "train peak, simulated",
                "error",
                "prefill peak, closed form",
                "prefill peak, simulated",
                "KV cache",
                "x-transformers cache object",
                "training fits",
            ],
            table,
        )
    )
    measured = rows[
        (rows["metric"] == "peak_train") & (rows["method"] == "measured") & (rows["category"] == "")
    ]
    check = []
    for _, m in measured.iterrows():
        sim = value(
            rows,
            variant_id=m["variant_id"],
            seq_len=m["seq_len"],
            metric="peak_train",
            method="simulated",
            category="",
        )
        check.append(
            [
                m["variant_id"],
                m["device"],
                f"{int(m['seq_len'])} x {int(m['batch'])}",
                mib(sim),
                mib(m["value"]),
                pct(sim / m["value"] - 1 if sim and m["value"] else None),
            ]
        )
    if check:
        section.tables.append(
            Table(
                "Simulated against measured, real tensors",
                "The same training step run with real tensors on shapes that fit this device "
                "(peak from the tracker on CPU, torch.cuda.max_memory_allocated on CUDA).",
                ["variant", "device", "tokens x batch", "simulated", "measured", "error"],
                check,
            )
        )
    parts = rows[
        (rows["metric"] == "peak_train")
        & (rows["method"] == "simulated")
        & (rows["seq_len"] == top)
        & rows["category"].isin(PARTS)
    ]
    parts = pd.concat([pick(parts, variant_id=v) for v in variant_order(study)])
    fig1 = stacked(
        parts,
        "variant_id",
        "category",
        "memory_breakdown",
        f"Training-step peak by category at {int(top)} tokens",
        "GiB",
        "Simulated (MemTracker on the no-allocation build), at the moment of the peak.",
        "memory / simulated / peak_train",
        scale=2**30,
    )
    curve = rows[
        (rows["metric"] == "peak_train")
        & (rows["category"] == "")
        & (rows["seq_len"] >= 512)
        & rows["method"].isin(["closed_form", "simulated"])
    ].copy()
    curve["value"] = curve["value"] / 2**30
    fig2 = lines(
        curve,
        "seq_len",
        "variant_id",
        "memory_vs_seq",
        "Training-step peak versus sequence length",
        "GiB",
        "Solid: closed form; dashed: simulated. Log-log: slope 1 is linear growth, slope 2 quadratic.",
        "memory / closed_form and simulated / peak_train",
        style_by="method",
    )
    section.figures += [f for f in (fig1, fig2) if f]
    terms = pick(rows, variant_id="base", metric="activation_term", seq_len=top)
    if not terms.empty:
        biggest = terms.sort_values("value").iloc[-1]
        section.intro += (
            f" At {int(top)} tokens the largest activation term of the base model is "
            f"'{biggest['category']}' ({mib(biggest['value'])})."
        )
    return section
