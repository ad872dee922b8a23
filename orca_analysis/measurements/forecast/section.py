"""The forecast section: per variant, length and compute dtype, the attention kernel each catalogue GPU would
run (predicted), beside the kernel a GPU run observed where one exists."""

from __future__ import annotations

from ...catalog.declared.forecast import (
    GPU_MAX_BATCH,
    GPU_MFU_CEILING,
    GPU_PEAK,
    GPU_STEP_FLOOR,
    GPU_STEP_PREDICTED,
    SDPA_PREDICTED_CALLS,
)
from ...catalog.declared.kernels import RAN_TRAIN
from ...catalog.labels import Breakdown, Search
from ...catalog.vocabulary import Status
from ...devices import load_devices
from ...instruments.gpu_forecast import STEPS
from ...instruments.gpu_memory import LEFT_OUT
from ...kit.sections import Section, Table, variant_order
from ...results.query import Results
from .checked import catalogue_gpu, checked_on_a_gpu, gb


def _cell(values: list) -> str:
    return ", ".join(
        f"{v.get('backend')} x{int(v.value)}" for v in sorted(values, key=lambda v: v.get("backend"))
    )


def _observed(results: Results, vid: str, seq: int, batch: int, gpu_ids: list[str]) -> tuple[str, str]:
    """(what a GPU run's profiler saw, the catalogue device it was) from the kernels measurement: the values of
    one GPU (the first named), at this length and batch."""
    ran = [
        v
        for v in results.values(RAN_TRAIN, variant=vid, seq_len=seq, batch=batch)
        if v.device.startswith("cuda")
    ]
    if not ran:
        return "", ""
    ran = [v for v in ran if v.device_name == ran[0].device_name]
    return _cell(ran), catalogue_gpu(ran[0].device_name, gpu_ids)


def forecast_section(results: Results, study) -> Section:
    section = Section(
        "forecast",
        "On a GPU (predicted): the attention kernel and the memory",
        "Which scaled_dot_product_attention backend CUDA would run for each attention call of a training step, on "
        "each GPU of the device catalogue: predicted from torch's own selection rules for the installed version "
        "(instruments/sdpa_rules.py), on the calls x-transformers makes, captured from the no-allocation build. "
        "Not observed: where a GPU run exists, what its profiler saw is beside the prediction.",
    )
    gpus = list(load_devices())
    found = results.values(SDPA_PREDICTED_CALLS)
    if not found:
        section.missing = "no `forecast` results: add `forecast` to the study's measurements and run it"
        return section
    order = {vid: i for i, vid in enumerate(variant_order(study))}
    keys = sorted(
        {(v.variant_id, v.seq_len, v.batch, v.get("compute")) for v in found},
        key=lambda k: (order.get(k[0], len(order)), k[1], k[2], k[3]),
    )
    rows, mismatches = [], []
    for vid, seq, batch, compute in keys:
        at = {"variant": vid, "seq_len": seq, "batch": batch, "compute": compute}
        cells = {g: _cell(results.values(SDPA_PREDICTED_CALLS, gpu=g, **at)) for g in gpus}
        seen, on = _observed(results, vid, seq, batch, gpus)
        if seen and on and compute == "bfloat16" and seen != cells[on]:
            mismatches.append([vid, f"{seq} x {batch}", on, cells[on], seen])
        rows.append([vid, f"{seq} x {batch}", compute, *(cells[g] for g in gpus), seen or "no GPU run"])
    section.tables.append(
        Table(
            "The attention kernel, predicted per GPU",
            "Backend x calls per training-step forward (one call per layer). bfloat16: the calls of a bfloat16 build, "
            "which is what SDPA receives under autocast over float32 weights too (SDPA is on autocast's lower-precision "
            "list, so q, k, v and a float mask arrive in bfloat16). x-transformers "
            "enables flash, efficient and math around its call (cuDNN off). Each refused backend's reason, in torch's "
            "words, is in the results' notes. Observed: the profiler of a GPU run (the kernels measurement).",
            ["variant", "tokens x batch", "compute", *gpus, "observed on a GPU"],
            rows,
        )
    )
    reasons = sorted(
        {
            part.split(": ", 1)[1]
            for v in found
            if v.get("compute") == "bfloat16"
            for part in v.note.split(" | ")
            if "refused" in part
        }
    )
    if reasons:
        section.tables.append(
            Table(
                "Why the faster kernels are refused (bfloat16)",
                "Distinct refusals across the study's calls, as torch words them.",
                ["backend refused: torch's reason"],
                [[r] for r in reasons],
            )
        )
    _memory_tables(section, results, gpus, order)
    if mismatches:
        section.tables.append(
            Table(
                "Prediction against observation: mismatches",
                "A finding: the rules or the call capture missed what the GPU did.",
                ["variant", "tokens x batch", "GPU", "predicted", "observed"],
                mismatches,
            )
        )
    return section


def _per_step_rows(found: list, gpus: list[str], order: dict[str, int], cell) -> list[list]:  # noqa: ANN001
    """One row per (variant, workload, compute, step) of `found`, a cell per GPU: cell(gpu, where)."""
    keys = sorted(
        {(v.variant_id, v.seq_len, v.batch, v.get("compute"), v.get("step")) for v in found},
        key=lambda k: (order.get(k[0], len(order)), k[1], k[2], k[3], STEPS.index(k[4])),
    )
    rows = []
    for vid, seq, batch, compute, step in keys:
        at = {"variant": vid, "seq_len": seq, "batch": batch, "compute": compute, "step": step}
        rows.append([vid, f"{seq} x {batch}", compute, step, *(cell(g, at) for g in gpus)])
    return rows


def _memory_tables(section: Section, results: Results, gpus: list[str], order: dict[str, int]) -> None:
    """Each step's simulated GPU peak and whether it fits, per GPU; the largest batch that fits."""
    devices = load_devices()
    peaks = results.values(GPU_PEAK, category=Breakdown.TOTAL)
    without = sorted({f"{v.variant_id}: {v.note}" for v in results.values(GPU_PEAK, status=Status.SKIPPED)})
    if without:
        section.intro += " No GPU memory or time forecast for " + "; ".join(without) + "."
    if not peaks:
        return

    def cell(g: str, at: dict) -> str:
        found = results.values(GPU_PEAK, gpu=g, category=Breakdown.TOTAL, **at)
        if not found:
            return ""
        return f"{gb(found[0].value)}, " + (
            "fits" if found[0].value <= devices[g].memory_bytes else "does NOT fit"
        )

    rows = _per_step_rows(peaks, gpus, order, cell)
    section.tables.append(
        Table(
            "GPU memory per step, simulated (a forecast)",
            "Peak bytes of each step as CUDA would run it, against each GPU's printed memory: the no-allocation build "
            "walked with every attention call routed to its predicted backend's operator, CUDA's autocast rules for "
            "bfloat16 (autocast over float32 weights, gradients and AdamW state), allocations rounded to 512 B "
            f"(instruments/gpu_memory.py). Not included: {LEFT_OUT}. The peak by category is in the results.",
            ["variant", "tokens x batch", "compute", "step", *gpus],
            rows,
        )
    )
    checked_on_a_gpu(section, results, gpus)
    _time_table(section, results, gpus, order)
    largest = results.values(GPU_MAX_BATCH)
    if not largest:
        return
    rows = []
    for seq, vid, compute, step in sorted(
        {(v.seq_len, v.variant_id, v.get("compute"), v.get("step")) for v in largest}
    ):
        at = {"variant": vid, "seq_len": seq, "compute": compute, "step": step}
        cells = [
            next((f"{int(v.value)}" for v in results.values(GPU_MAX_BATCH, gpu=g, **at)), "") for g in gpus
        ]
        rows.append([vid, seq, compute, step, *cells])
    methods = sorted(
        {
            f"{v.labels['gpu']} {v.labels['step']}: {v.note}"
            for v in largest
            if v.labels.get("search") == Search.WALKED
        }
    )
    section.tables.append(
        Table(
            "The largest batch that fits, simulated (a forecast)",
            "Sequences per step at the study's longest length. Each storage's bytes are affine in the batch: the "
            "walks at batch 2 and 3 record every allocation, and the peak at any batch is replayed from them, "
            "rounding included; the answer fits and one more does not by the replay, and a walk at the answer "
            "gives the replay's peak to the byte; 0: not even one sequence fits (instruments/max_batch.py)."
            + (" Exceptions: " + "; ".join(methods) if methods else ""),
            ["variant", "tokens", "compute", "step", *gpus],
            rows,
        )
    )


def _time_table(section: Section, results: Results, gpus: list[str], order: dict[str, int]) -> None:
    """Each step's floor and predicted time per GPU, and the MFU ceiling."""
    floors = results.values(GPU_STEP_FLOOR)
    if not floors:
        return

    def cell(g: str, at: dict) -> str:
        got = [results.values(m, gpu=g, **at) for m in (GPU_STEP_FLOOR, GPU_STEP_PREDICTED)]
        got += [results.values(GPU_MFU_CEILING, gpu=g, convention=c, **at) for c in ("palm", "kernel")]
        if not all(got):
            return ""
        return (
            f"{got[0][0].value * 1e3:.3g} / {got[1][0].value * 1e3:.3g} ms, MFU ≤ {got[2][0].value:.1%} "
            f"(kernel {got[3][0].value:.1%})"
        )

    rows = _per_step_rows(floors, gpus, order, cell)
    section.tables.append(
        Table(
            "Step time on a GPU, predicted: floor / predicted, and the MFU ceiling",
            "From the operators of the same walk (instruments/roofline.py). Floor: the sum over operators of max(FLOPs "
            "/ the dtype's dense datasheet peak, bytes / the datasheet bandwidth): no run is faster. Predicted: GEMMs "
            "at 70% of peak (assumed), flash attention at 50% (FlashAttention-2's low end on A100), memory-efficient "
            "at 35% (assumed), memory-bound operators at 80% of bandwidth (assumed), plus 5 us per operator "
            "(assumed). float32 GEMMs run at the float32 peak (torch's default: TF32 off). MFU ceiling: model FLOPs / "
            "(floor x the policy's peak), the best MFU this design could reach on that GPU: PaLM's count (every "
            "(query, key) pair; above 100% where a causal kernel skips the masked half) and, in brackets, the "
            "kernel's count (the pairs the attention kernel runs).",
            ["variant", "tokens x batch", "compute", "step", *gpus],
            rows,
        )
    )
