"""FLOPs: counter, closed form, fvcore and the rules of thumb, side by side (measurement `flops`)."""

from __future__ import annotations

import pandas as pd

from ...formulas.flops import MFU_CONVENTION_TEXT
from ..figures import lines, stacked, vs_axes
from . import Section, Table, axis_table, ok_rows, pct, pick, share, si, value, variant_order

COMPONENTS = ("q_proj", "k_proj", "v_proj", "attention_core", "alibi", "out_proj", "feedforward", "logits")


def flops_section(results: pd.DataFrame, study) -> Section:
    rows = ok_rows(results, "flops")
    section = Section(
        "flops",
        "FLOPs",
        "Counted on the no-allocation build by an operator-level counter "
        "(torch FlopCounterMode with formulas for every attention kernel), beside the closed form "
        "(formulas/flops.py), fvcore and the Kaplan 6N and PaLM estimates. A multiply-add is 2 FLOPs. "
        + MFU_CONVENTION_TEXT,
    )
    if rows.empty:
        section.missing = "no `flops` results: add `flops` to the study's measurements and run it"
        return section
    whole = rows[rows["category"] == ""]
    table = []
    for vid in variant_order(study):
        for seq in sorted(whole[whole["variant_id"] == vid]["seq_len"].dropna().unique()):
            w = pick(whole, variant_id=vid, seq_len=seq)
            tokens = seq * float(w["batch"].iloc[0])
            counter = value(w, metric="train_step_causal", method="counter")
            closed = value(w, metric="train_step_causal", method="closed_form")
            dense = value(w, metric="train_step_dense", method="counter")
            plain_ctr = value(w, metric="train_step_dense", method="counter_plain")
            fv, fv_plain = (value(w, metric="forward_dense", method=m) for m in ("fvcore", "fvcore_plain"))
            fwd_dense = value(w, metric="forward_dense", method="counter")
            table.append(
                [
                    vid,
                    f"{int(seq)}",
                    si(counter, "FLOP"),
                    si(counter / tokens if counter else None, "FLOP"),
                    si(dense, "FLOP"),
                    pct(closed / counter - 1 if counter and closed else None, 3),
                    share(1 - plain_ctr / dense if plain_ctr and dense else None),
                    pct(fv / fwd_dense - 1 if fv and fwd_dense else None, 3) if fv else "not run",
                    share(1 - fv_plain / fwd_dense if fv_plain and fwd_dense else None)
                    if fv_plain
                    else "not run",
                    si(value(w, metric="train_step", method="kaplan_6n"), "FLOP"),
                    si(value(w, metric="train_step_dense", method="palm"), "FLOP"),
                ]
            )
    section.tables.append(
        Table(
            "Training-step FLOPs per variant and sequence length",
            "Counter = operator counter (causal-aware: masked half of attention not counted; dense: what kernels "
            "that do not skip masked blocks compute). Closed-form gap = closed form / counter - 1. 'Plain tools "
            "miss' = the share of the dense count that plain FlopCounterMode (training step) and plain fvcore "
            "(forward) leave out. fvcore runs on real weights, so only where affordable (see results for the reason).",
            [
                "variant",
                "seq len (tokens)",
                "train step, causal (counter)",
                "per token",
                "train step, dense (counter)",
                "closed-form gap",
                "plain FlopCounterMode misses",
                "fvcore (completed) gap",
                "plain fvcore misses",
                "Kaplan 6N",
                "PaLM 6N+12LHQT",
            ],
            table,
        )
    )
    top = whole["seq_len"].max()
    comp = rows[
        (rows["category"].isin(COMPONENTS))
        & (rows["metric"] == "train_step_causal")
        & (rows["method"] == "counter")
        & (rows["seq_len"] == top)
    ].copy()
    comp["value"] = comp["value"] / (comp["seq_len"] * comp["batch"])
    comp = comp.set_index("variant_id").loc[[v for v in variant_order(study) if v in set(comp["variant_id"])]]
    fig = stacked(
        comp.reset_index(),
        "variant_id",
        "category",
        "flops_components",
        f"Training FLOPs per token by component at {int(top)} tokens",
        "MFLOP per token",
        "Operator counter, causal-aware, training step (forward + backward) divided by tokens.",
        "flops / counter / train_step_causal",
        scale=1e6,
    )
    curve = whole[(whole["metric"] == "train_step_causal") & (whole["method"] == "counter")]
    fig2 = lines(
        curve,
        "seq_len",
        "variant_id",
        "flops_vs_seq",
        "Training-step FLOPs versus sequence length",
        "FLOP per training step",
        "Operator counter, causal-aware, batch as in the study; log-log.",
        "flops / counter / train_step_causal",
    )
    per_variant = curve[curve["seq_len"] == top].set_index("variant_id")["value"]
    attention = comp[comp["category"].isin(["attention_core", "alibi"])].groupby(level=0)["value"].sum()
    table = axis_table(study, per_variant.index)
    table["train step"] = table["variant_id"].map(per_variant)
    table["attention + ALiBi"] = table["variant_id"].map(
        attention * comp["seq_len"].groupby(level=0).first() * comp["batch"].groupby(level=0).first()
    )
    fig3 = vs_axes(
        table.dropna(),
        ["dim", "depth", "heads"],
        {"train step": "train step", "attention + ALiBi": "attention + ALiBi"},
        "train step",
        "flops_vs_axes",
        f"Training-step FLOPs versus dim, depth and heads at {int(top)} tokens",
        "FLOP per training step",
        "Operator counter, causal-aware, log-log.",
        "flops / counter / train_step_causal",
    )
    section.figures += [f for f in (fig3, fig, fig2) if f]
    return section
