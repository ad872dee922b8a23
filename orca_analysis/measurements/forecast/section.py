"""The forecast section: per variant, length and compute dtype, the attention kernel each catalogue GPU would
run (predicted), beside the kernel a GPU run observed where one exists."""

from __future__ import annotations

import re

from ...devices import load_devices
from ...report.sections import Section, Table, variant_order
from ...results.query import Results


def _cell(values: list) -> str:
    return ", ".join(
        f"{v.get('backend')} x{int(v.value)}" for v in sorted(values, key=lambda v: v.get("backend"))
    )


def _observed(results: Results, vid: str, seq: int, batch: int, gpu_ids: list[str]) -> tuple[str, str]:
    """(what a GPU run's profiler saw, the catalogue device it was) from the kernels measurement: the values of
    one GPU (the first named), at this length and batch."""
    ran = [
        v
        for v in results.values("ran_train", variant=vid, seq_len=seq, batch=batch)
        if v.device.startswith("cuda")
    ]
    if not ran:
        return "", ""
    ran = [v for v in ran if v.device_name == ran[0].device_name]
    tokens = set(
        re.split(r"[^a-z0-9]+", ran[0].device_name.lower())
    )  # "NVIDIA H100 80GB HBM3" -> {h100, ...}
    match = next((g for g in gpu_ids if _model(g) in tokens), "")
    return _cell(ran), match


def _model(gpu_id: str) -> str:
    """The model token of a catalogue id: the first part with a digit ("h100-sxm-80gb" -> h100, "rtx-4090" -> 4090)."""
    return next((part for part in gpu_id.split("-") if any(ch.isdigit() for ch in part)), gpu_id)


def forecast_section(results: Results, study) -> Section:
    section = Section(
        "forecast",
        "On a GPU (predicted): the attention kernel",
        "Which scaled_dot_product_attention backend CUDA would run for each attention call of a training step, on "
        "each GPU of the device catalogue: predicted from torch's own selection rules for the installed version "
        "(instruments/sdpa_rules.py), on the calls x-transformers makes, captured from the no-allocation build. "
        "Not observed: where a GPU run exists, what its profiler saw is beside the prediction.",
    )
    gpus = list(load_devices())
    found = results.values("sdpa_predicted_calls")
    if not found:
        section.missing = "no `forecast` results: add `forecast` to the study's measurements and run it"
        return section
    order = {vid: i for i, vid in enumerate(variant_order(study))}
    keys = sorted({(v.variant_id, v.seq_len, v.batch, v.get("compute")) for v in found},
                  key=lambda k: (order.get(k[0], len(order)), k[1], k[2], k[3]))  # fmt: skip
    rows, mismatches = [], []
    for vid, seq, batch, compute in keys:
        at = {"variant": vid, "seq_len": seq, "batch": batch, "compute": compute}
        cells = {g: _cell(results.values("sdpa_predicted_calls", gpu=g, **at)) for g in gpus}
        seen, on = _observed(results, vid, seq, batch, gpus)
        if seen and on and compute == "bfloat16" and seen != cells[on]:
            mismatches.append([vid, f"{seq} x {batch}", on, cells[on], seen])
        rows.append([vid, f"{seq} x {batch}", compute, *(cells[g] for g in gpus), seen or "no GPU run"])
    section.tables.append(Table(
        "The attention kernel, predicted per GPU",
        "Backend x calls per training-step forward (one call per layer). bfloat16: the calls of a bfloat16 build, "
        "which is what SDPA receives under autocast over float32 weights too (SDPA is on autocast's lower-precision "
        "list, so q, k, v and a float mask arrive in bfloat16). x-transformers "
        "enables flash, efficient and math around its call (cuDNN off). Each refused backend's reason, in torch's "
        "words, is in the results' notes. Observed: the profiler of a GPU run (the kernels measurement).",
        ["variant", "tokens x batch", "compute", *gpus, "observed on a GPU"], rows))  # fmt: skip
    reasons = sorted({part.split(": ", 1)[1] for v in found if v.get("compute") == "bfloat16"
                      for part in v.note.split(" | ") if "refused" in part})  # fmt: skip
    if reasons:
        section.tables.append(Table("Why the faster kernels are refused (bfloat16)", "Distinct refusals across the "
                                    "study's calls, as torch words them.", ["backend refused: torch's reason"], [[r] for r in reasons]))  # fmt: skip
    if mismatches:
        section.tables.append(Table("Prediction against observation: mismatches", "A finding: the rules or the "
                                    "call capture missed what the GPU did.",
                                    ["variant", "tokens x batch", "GPU", "predicted", "observed"], mismatches))  # fmt: skip
    return section
