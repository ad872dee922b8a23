"""The FLOPs section: counter, closed form, fvcore and the rules of thumb, side by side."""

from __future__ import annotations

import pandas as pd

from ...catalog.declared.flops import (
    CLOSED_FORM_GAP,
    FVCORE_GAP,
    PLAIN_MISSED_SHARE,
    TRAIN_STEP_CAUSAL,
    TRAIN_STEP_CAUSAL_ATTENTION,
    TRAIN_STEP_CAUSAL_PER_TOKEN,
    TRAIN_STEP_DENSE,
    TRAIN_STEP_ESTIMATE,
)
from ...catalog.labels import TOTAL_COMPONENT
from ...catalog.vocabulary import Method
from ...formulas.flops import COMPONENTS, MFU_CONVENTION_TEXT
from ...kit.figures import lines, stacked, vs_axes
from ...kit.format import Quantity
from ...kit.sections import SHAPE_AXES, Section, Table, axes_of, axis_panels, shape_of, variant_order
from ...results.query import Results

TOTAL = TOTAL_COMPONENT


def _row(results: Results, vid: str, n: int) -> list:
    at = {"variant": vid, "seq_len": n}
    fv_gap = results.number(FVCORE_GAP, **at)
    fv_missed = results.number(PLAIN_MISSED_SHARE, tool="fvcore", **at)
    return [
        vid,
        f"{n}",
        Quantity(results.number(TRAIN_STEP_CAUSAL, method=Method.COUNTER, **TOTAL, **at), "FLOP"),
        Quantity(results.number(TRAIN_STEP_CAUSAL_PER_TOKEN, method=Method.COUNTER, **TOTAL, **at), "FLOP"),
        Quantity(results.number(TRAIN_STEP_DENSE, method=Method.COUNTER, **TOTAL, **at), "FLOP"),
        Quantity(results.number(CLOSED_FORM_GAP, quantity=TRAIN_STEP_CAUSAL, **at), "fraction", "signed", 3),
        Quantity(results.number(PLAIN_MISSED_SHARE, tool="flop_counter_mode", **at), "fraction"),
        "not run" if fv_gap is None else Quantity(fv_gap, "fraction", "signed", 3),
        "not run" if fv_missed is None else Quantity(fv_missed, "fraction"),
        Quantity(results.number(TRAIN_STEP_ESTIMATE, method=Method.KAPLAN_6N, **at), "FLOP"),
        Quantity(results.number(TRAIN_STEP_ESTIMATE, method=Method.PALM, **at), "FLOP"),
    ]


def flops_section(results: Results, study) -> Section:
    section = Section(
        "flops",
        "FLOPs",
        "Counted on the no-allocation build by an operator-level counter "
        "(torch FlopCounterMode with formulas for every attention kernel), beside the closed form "
        "(formulas/flops.py), fvcore and the Kaplan 6N and PaLM estimates. A multiply-add is 2 FLOPs. "
        + MFU_CONVENTION_TEXT,
    )
    steps = results.values(TRAIN_STEP_CAUSAL, method=Method.COUNTER, **TOTAL)
    if not steps:
        section.missing = "no `flops` results: add `flops` to the study's measurements and run it"
        return section
    lengths = {vid: sorted({v.seq_len for v in steps if v.variant_id == vid}) for vid in variant_order(study)}
    section.tables.append(
        Table(
            "Training-step FLOPs per variant and sequence length",
            "Counter = operator counter (causal-aware: masked half of attention not counted; dense: what kernels "
            "that do not skip masked blocks compute). Closed-form gap = (closed form - counter) / counter. "
            "'Plain tools miss' = the share of the dense count that plain FlopCounterMode (training step) and "
            "plain fvcore (forward) leave out. fvcore runs on real weights, so only where affordable (see "
            "results for the reason).",
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
            [_row(results, vid, n) for vid in variant_order(study) for n in lengths[vid]],
        )
    )
    top = max(v.seq_len for v in steps)
    per_token = results.values(
        TRAIN_STEP_CAUSAL_PER_TOKEN, method=Method.COUNTER, seq_len=top, component=COMPONENTS
    )
    order = {vid: i for i, vid in enumerate(variant_order(study))}
    comp = pd.DataFrame(
        [{"variant_id": v.variant_id, "category": v.get("component"), "value": v.value} for v in per_token]
    )
    if (
        not comp.empty
    ):  # a component no variant has (ALiBi's element-wise work in a design without it) is left out
        comp = comp[comp.groupby("category")["value"].transform("max") > 0]
        comp = comp.sort_values("variant_id", key=lambda s: s.map(order), kind="stable")
    fig = stacked(
        comp,
        "variant_id",
        "category",
        "flops_components",
        f"Training FLOPs per token by component at {top} tokens",
        "MFLOP per token",
        "Operator counter, causal-aware, training step (forward + backward) divided by tokens.",
        "flops / counter / train_step_causal",
        scale=1e6,
    )
    curve = pd.DataFrame(
        [{"variant_id": v.variant_id, "seq_len": v.seq_len, "value": v.value} for v in steps]
    )
    fig2 = lines(
        curve,
        "seq_len",
        "variant_id",
        "flops_vs_seq",
        "Training-step FLOPs versus sequence length",
        "FLOP per training step",
        "Operator counter, causal-aware, batch as in the study; log-log; one panel per sweep axis.",
        "flops / counter / train_step_causal",
        panels=axis_panels(study),
    )
    shapes, on = shape_of(study), axes_of(study)
    attention = "attention + ALiBi" if study.sets("alibi_pos_bias") else "attention"
    table = pd.DataFrame(
        [
            {
                "variant_id": v.variant_id,
                "on_axis": on[v.variant_id],
                **shapes[v.variant_id],
                "train step": v.value,
                attention: results.number(TRAIN_STEP_CAUSAL_ATTENTION, variant=v.variant_id, seq_len=top),
            }
            for v in steps
            if v.seq_len == top and v.variant_id in shapes
        ]
    )
    fig3 = vs_axes(
        table.dropna(),
        list(SHAPE_AXES),
        {"train step": "train step", attention: attention},
        "train step",
        "flops_vs_axes",
        f"Training-step FLOPs versus dim, depth and heads at {top} tokens",
        "FLOP per training step",
        "Operator counter, causal-aware, log-log.",
        "flops / counter / train_step_causal",
    )
    section.figures += [f for f in (fig3, fig, fig2) if f]
    return section
