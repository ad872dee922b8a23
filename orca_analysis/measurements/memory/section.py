"""The memory section: closed form, simulated (no allocation) and measured, training and inference."""

from __future__ import annotations

import pandas as pd

from ...catalog.declared.memory import (
    ACTIVATION_TERM,
    ALIBI_BYTES_AT_PEAK,
    ALIBI_SHARE_OF_PEAK,
    CACHE_OBJECT,
    FITS_TRAIN,
    KV_CACHE_SIZE,
    MEMORY_REL_ERROR,
    PEAK_PREFILL,
    PEAK_TRAIN,
    PEAK_TRAIN_PART,
    TOTAL,
)
from ...catalog.labels import Phase
from ...catalog.vocabulary import Method
from ...kit.figures import lines, stacked
from ...kit.format import Quantity, mib
from ...kit.sections import Section, Table, axis_panels, variant_order
from ...results.query import Results

PARTS = ("parameters", "gradients", "optimizer_state", "activations", "temporaries", "inputs", "buffers")
WHOLE = {"phase": Phase.ALL}
CAPACITIES = ("80GB", "141GB")


def _fits(results: Results, vid: str, n: int, b: int) -> str:
    fits = {v.get("capacity"): v.value for v in results.values(FITS_TRAIN, variant=vid, seq_len=n, batch=b)}
    marks = [(c, fits.get(c)) for c in CAPACITIES]
    return ", ".join(f"{c}: {'n/a' if v is None else 'yes' if v else 'NO'}" for c, v in marks)


def _peaks_row(results: Results, vid: str, n: int, b: int) -> list:
    at = {"variant": vid, "seq_len": n, "batch": b}
    peak = lambda metric, method: results.number(metric, method=method, **TOTAL, **at)  # noqa: E731
    error = results.number(
        MEMORY_REL_ERROR, quantity=PEAK_TRAIN, pair="closed_form_vs_simulated", **WHOLE, **at
    )
    return [
        vid,
        f"{n}",
        Quantity(peak(PEAK_TRAIN, Method.CLOSED_FORM), "bytes"),
        Quantity(peak(PEAK_TRAIN, Method.SIMULATED), "bytes"),
        Quantity(error, "fraction", "signed"),
        Quantity(peak(PEAK_PREFILL, Method.CLOSED_FORM), "bytes"),
        Quantity(peak(PEAK_PREFILL, Method.SIMULATED), "bytes"),
        Quantity(results.number(KV_CACHE_SIZE, method=Method.CLOSED_FORM, **at), "bytes"),
        Quantity(results.number(CACHE_OBJECT, method=Method.CLOSED_FORM, **at), "bytes"),
        _fits(results, vid, n, b),
    ]


def _check_rows(results: Results) -> list[list]:
    """Each real-tensor training peak beside the simulation of the same workload, and their stored error."""
    rows = []
    for m in results.values(PEAK_TRAIN, method=Method.MEASURED, **TOTAL):
        at = {"variant": m.variant_id, "seq_len": m.seq_len, "batch": m.batch}
        sim = results.number(PEAK_TRAIN, method=Method.SIMULATED, **TOTAL, **at)
        pair = "simulated_vs_measured_cuda" if m.device.startswith("cuda") else "simulated_vs_measured"
        error = results.number(
            MEMORY_REL_ERROR, quantity=PEAK_TRAIN, pair=pair, **WHOLE, device=m.device, **at
        )
        rows.append(
            [
                m.variant_id,
                m.device,
                f"{m.seq_len} x {m.batch}",
                Quantity(sim, "bytes"),
                Quantity(m.value, "bytes"),
                Quantity(error, "fraction", "signed"),
            ]
        )
    return rows


WEIGHTS = ("parameters", "gradients", "optimizer_state")


def _breakdown(results: Results, study, top: int):
    """Stacked bars of the simulated peak at `top` tokens: the ALiBi tensors, the weight state by kind and
    the rest (peak_train_part), which sum to the peak; the tracker's categories where no parts are stored."""
    at = {"method": Method.SIMULATED, "seq_len": top}
    alibi = study.sets("alibi_pos_bias")
    held = results.values(PEAK_TRAIN_PART, part={"alibi_bias", "other"} if alibi else {"other"}, **at)
    with_parts = {v.variant_id for v in held}
    cats = results.values(PEAK_TRAIN, category=set(WEIGHTS) if held else set(PARTS), **at)
    frame = pd.concat(
        [
            _frame(held if alibi else [v for v in held if v.get("part") != "alibi_bias"], category="part"),
            _frame([v for v in cats if not held or v.variant_id in with_parts], category="category"),
        ]
    )
    if frame.empty:
        return None
    frame = pd.concat([frame[frame["variant_id"] == v] for v in variant_order(study)])
    named = {
        "alibi_bias": "ALiBi tensors",
        "optimizer_state": "optimizer state",
        "other": "other activations",
    }
    frame["category"] = frame["category"].map(lambda c: named.get(c, c))
    how = (
        (
            "the ALiBi tensors alive (bias, causal mask, the masked copies saved for the backward), "
            if alibi
            else ""
        )
        + "the weight state, and every other activation, temporary, input and buffer"
        if held
        else "by the tracker's category"
    )
    return stacked(
        frame,
        "variant_id",
        "category",
        "memory_breakdown",
        f"Training-step peak at {top} tokens: what it holds",
        "GiB",
        f"Simulated (MemTracker on the no-allocation build), at the moment of the peak: {how}.",
        "memory / simulated / peak_train_part and peak_train",
        scale=2**30,
    )


def _parts_rows(results: Results, study, n: int, b: int) -> list[list]:
    """The peak in parts; the ALiBi columns only where some variant has ALiBi."""
    alibi, rows = study.sets("alibi_pos_bias"), []
    for vid in variant_order(study):
        at = {"variant": vid, "seq_len": n, "batch": b, "method": Method.SIMULATED}
        parts = {v.get("part"): v.value for v in results.values(PEAK_TRAIN_PART, **at)}
        if not parts:
            continue
        gap = results.number(
            MEMORY_REL_ERROR,
            quantity=ALIBI_BYTES_AT_PEAK,
            pair="closed_form_vs_simulated",
            **{k: v for k, v in at.items() if k != "method"},
        )
        cf = results.number(ALIBI_BYTES_AT_PEAK, **{**at, "method": Method.CLOSED_FORM})
        peak = Quantity(results.number(PEAK_TRAIN, **TOTAL, **at), "bytes")
        if not alibi:
            rows.append([vid, peak, *(Quantity(parts.get(p), "bytes") for p in ("weight_state", "other"))])
            continue
        rows.append(
            [
                vid,
                peak,
                *(Quantity(parts.get(p), "bytes") for p in ("alibi_bias", "weight_state", "other")),
                Quantity(results.number(ALIBI_SHARE_OF_PEAK, **at) or 0.0, "fraction"),
                Quantity(cf, "bytes"),
                Quantity(gap, "fraction", "signed"),
            ]
        )
    return rows


def _parts_table(rows: list[list], top: int, alibi: bool) -> Table:
    if not alibi:
        return Table(
            f"What the training-step peak holds at {top} tokens",
            "The simulated peak in parts that sum to "
            "it, from the tensors the tracker finds alive at that moment: the weight state (parameters, "
            "gradients, optimizer state) and every other activation and temporary.",
            ["variant", "peak, simulated", "weight state", "other"],
            rows,
        )
    return Table(
        f"What the training-step peak holds at {top} tokens",
        "The simulated peak in parts that sum to it, from the tensors the tracker finds alive at that moment: the "
        "ALiBi tensors (the bias, its causal mask and the masked (batch x heads x n x n) copy each layer saves for "
        "its backward), the weight state (parameters, gradients, AdamW) and every other activation and temporary. "
        "The closed form's count of the ALiBi tensors alive at its own peak is beside it, with the gap.",
        [
            "variant",
            "peak, simulated",
            "ALiBi tensors",
            "weight state",
            "other",
            "ALiBi share",
            "ALiBi, closed form",
            "gap",
        ],
        rows,
    )


def _gap_rows(results: Results, study) -> list[list]:
    order = {vid: i for i, vid in enumerate(variant_order(study))}
    found = [
        v
        for v in results.values(MEMORY_REL_ERROR, pair="closed_form_vs_simulated", phase=Phase.ALL)
        if abs(v.value) > 0.01 and v.variant_id in order
    ]
    found.sort(key=lambda v: (order[v.variant_id], v.seq_len, v.batch, v.get("quantity")))
    return [
        [
            v.variant_id,
            f"{v.seq_len} x {v.batch}",
            v.get("quantity"),
            Quantity(v.value, "fraction", "signed"),
            v.note,
        ]
        for v in found
    ]


def _frame(values, **columns) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "variant_id": v.variant_id,
                "seq_len": v.seq_len,
                "method": v.method,
                "value": v.value,
                **{k: v.get(label) for k, label in columns.items()},
            }
            for v in values
        ]
    )


def memory_section(results: Results, study) -> Section:
    section = Section(
        "memory",
        "Memory",
        "Closed form (formulas/memory.py, from Korthikanti et al. 2022 adapted "
        "to what x-transformers keeps), simulated (the real training step and inference run on the "
        "no-allocation build under torch's MemTracker) and, where shapes fit, measured with real "
        "tensors. AdamW, the study's dtype, batch as in the study.",
    )
    peaks = results.values(PEAK_TRAIN, **TOTAL)
    if not peaks:
        section.missing = "no `memory` results: add `memory` to the study's measurements and run it"
        return section
    top, b = max(v.seq_len for v in peaks if v.seq_len is not None), study.workloads.batch_sizes[0]
    section.tables.append(
        Table(
            "Training-step and inference peaks",
            "Peak bytes of a training step (forward, backward, AdamW step) and of a prefill; the KV cache is layers x "
            "kv heads x head dim x tokens x batch x 2 (K and V) x bytes; the x-transformers cache object is what its "
            "generation cache really keeps. Error = closed form / simulated - 1. Training fits: the simulated peak "
            "against each device's nominal capacity (the CUDA context, cuBLAS workspace and the caching allocator's "
            "rounding are not in it).",
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
                "training fits (simulated)",
            ],
            # the study's lengths; the figure shows the whole sweep
            [
                _peaks_row(results, vid, n, b)
                for vid in variant_order(study)
                for n in study.workloads.seq_lens
            ],
        )
    )
    gaps = _gap_rows(results, study)
    if gaps:
        section.tables.append(
            Table(
                "Where the closed form and the simulation differ by more than 1%",
                "Error = closed form / simulated - 1, and what the closed form leaves out of this "
                "design (settings it does not model, the category with the largest gap).",
                ["variant", "tokens x batch", "quantity", "error", "why"],
                gaps,
            )
        )
    held = _parts_rows(results, study, top, b)
    if held:
        section.tables.append(_parts_table(held, top, study.sets("alibi_pos_bias")))
    check = _check_rows(results)
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
    fig1 = _breakdown(results, study, top)
    curve = _frame(
        v for v in peaks if v.method in (Method.CLOSED_FORM, Method.SIMULATED) and v.seq_len >= 512
    )
    if not curve.empty:
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
        panels=axis_panels(study),
    )
    section.figures += [f for f in (fig1, fig2) if f]
    terms = results.values(ACTIVATION_TERM, variant=study.base_variant.variant_id, seq_len=top)
    if terms:
        biggest = max(terms, key=lambda v: v.value)
        section.intro += (
            f" At {top} tokens the largest activation term of the base model is "
            f"'{biggest.get('term')}' ({mib(biggest.value)})."
        )
    return section
