"""The forecast section: per variant, length and compute dtype, the attention kernel each catalogue GPU would
run (predicted), beside the kernel a GPU run observed where one exists."""

from __future__ import annotations

import re

from ...catalog.declared.forecast import (
    GPU_MAX_BATCH,
    GPU_MFU_CEILING,
    GPU_PEAK,
    GPU_STEP_FLOOR,
    GPU_STEP_PREDICTED,
    SDPA_PREDICTED_CALLS,
)
from ...catalog.declared.kernels import RAN_TRAIN
from ...catalog.declared.memory import PEAK
from ...catalog.declared.speed import (
    CALIBRATION_TOKENS,
    COPY_BANDWIDTH,
    GEMM_CEILING,
    OP_OVERHEAD,
    PREFILL_TIME,
    TRAIN_STEP_OP_COST,
    TRAIN_STEP_TIME,
)
from ...catalog.labels import Breakdown, Search
from ...catalog.vocabulary import Method, Status
from ...devices import load_devices
from ...instruments.gpu_forecast import STEPS
from ...instruments.gpu_memory import LEFT_OUT
from ...instruments.roofline import GPU_EFFICIENCY, GPU_OVERHEAD_S
from ...kit.sections import Section, Table, variant_order
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
        for v in results.values(RAN_TRAIN, variant=vid, seq_len=seq, batch=batch)
        if v.device.startswith("cuda")
    ]
    if not ran:
        return "", ""
    ran = [v for v in ran if v.device_name == ran[0].device_name]
    return _cell(ran), _catalogue_gpu(ran[0].device_name, gpu_ids)


def _model(gpu_id: str) -> str:
    """The model token of a catalogue id: the first part with a digit ("h100-sxm-80gb" -> h100, "rtx-4090" -> 4090)."""
    return next((part for part in gpu_id.split("-") if any(ch.isdigit() for ch in part)), gpu_id)


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


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def _catalogue_gpu(device_name: str, gpus: list[str]) -> str:
    """The catalogue id a GPU run's device name names ("NVIDIA H100 80GB HBM3" -> h100-sxm-80gb), or ""."""
    tokens = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    return next((g for g in gpus if _model(g) in tokens), "")


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
        return f"{_gb(found[0].value)}, " + (
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
    _checked_on_a_gpu(section, results, gpus)
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


def _checked_on_a_gpu(section: Section, results: Results, gpus: list[str]) -> None:
    """The float32 forecast beside max_memory_allocated of a GPU run (memory_measured, study dtype float32)."""
    rows = []
    for step in ("train", "prefill"):
        for v in results.values(PEAK[step], method=Method.MEASURED):
            if not v.device.startswith("cuda") or v.dtype != "float32" or v.value is None:
                continue
            gpu = _catalogue_gpu(v.device_name, gpus)
            at = {"variant": v.variant_id, "seq_len": v.seq_len, "batch": v.batch, "step": step}
            forecast = (
                results.values(GPU_PEAK, gpu=gpu, compute="float32", category=Breakdown.TOTAL, **at)
                if gpu
                else []
            )
            if forecast:
                err = forecast[0].value / v.value - 1
                rows.append(
                    [
                        v.variant_id,
                        f"{v.seq_len} x {v.batch}",
                        step,
                        gpu,
                        _gb(forecast[0].value),
                        _gb(v.value),
                        f"{err:+.1%}",
                    ]
                )
    _time_checked(section, results, gpus)
    _inputs_checked(section, results, gpus)
    if rows:
        section.tables.append(
            Table(
                "GPU memory: forecast against a GPU run",
                "float32: the simulated peak beside torch.cuda.max_memory_allocated of the memory_measured "
                "measurement on that GPU (which includes no CUDA context either). Error: forecast / measured - 1.",
                ["variant", "tokens x batch", "step", "GPU", "forecast", "measured", "error"],
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


def _time_checked(section: Section, results: Results, gpus: list[str]) -> None:
    """The bfloat16 floor and prediction beside the speed measurement's median step time on that GPU."""
    rows = []
    for step, metric in (("train", TRAIN_STEP_TIME), ("prefill", PREFILL_TIME)):
        for v in results.values(metric):
            if not v.device.startswith("cuda") or v.value is None:
                continue
            gpu = _catalogue_gpu(v.device_name, gpus)
            at = {"variant": v.variant_id, "seq_len": v.seq_len, "batch": v.batch, "step": step, "gpu": gpu}
            floor = results.values(GPU_STEP_FLOOR, compute="bfloat16", **at) if gpu else []
            pred = results.values(GPU_STEP_PREDICTED, compute="bfloat16", **at) if gpu else []
            if floor and pred:
                rows.append(
                    [
                        v.variant_id,
                        f"{v.seq_len} x {v.batch}",
                        step,
                        gpu,
                        f"{floor[0].value * 1e3:.3g} ms",
                        f"{pred[0].value * 1e3:.3g} ms",
                        f"{v.value * 1e3:.3g} ms",
                        f"{floor[0].value / v.value:.2f}"
                        + (" (ABOVE: a bug)" if floor[0].value > v.value else ""),
                        f"{pred[0].value / v.value - 1:+.0%}",
                    ]
                )
    if rows:
        section.tables.append(
            Table(
                "Step time: forecast against a GPU run",
                "The bfloat16 floor and prediction beside the speed measurement's median on that GPU. The speed "
                "measurement builds the model in bfloat16; the forecast walks bfloat16 autocast over float32 weights "
                "(it counts autocast's casts and float32 optimizer state, which the measured run does not have).",
                [
                    "variant",
                    "tokens x batch",
                    "step",
                    "GPU",
                    "floor",
                    "predicted",
                    "measured",
                    "floor / measured",
                    "prediction error",
                ],
                rows,
            )
        )


def _inputs_checked(section: Section, results: Results, gpus: list[str]) -> None:
    """What the time forecast assumes on a catalogue GPU beside what a run on that GPU measured: the GEMM
    ceiling against the datasheet peak at the assumed GEMM efficiency, the copy bandwidth against the
    datasheet bandwidth at the assumed one, and the per-operator cost against the assumed launch cost."""
    devices, rows, done = load_devices(), [], set()
    for v in sorted(results.values(COPY_BANDWIDTH), key=lambda v: v.device_name or ""):
        gpu = _catalogue_gpu(v.device_name, gpus) if v.device.startswith("cuda") else ""
        if not gpu or gpu in done:  # one run's inputs per GPU (each variant's speed call measures them again)
            continue
        done.add(gpu)
        d, at = devices[gpu], {"device": v.device, "variant": v.variant_id}
        gemm = results.values(GEMM_CEILING, dtype="bfloat16", **at)
        if gemm and d.peak_flops.get("bfloat16"):
            assumed = GPU_EFFICIENCY["gemm"][0] * d.peak_flops["bfloat16"]
            rows.append(
                [
                    gpu,
                    "bfloat16 GEMM, TFLOP/s",
                    f"{assumed / 1e12:.0f}",
                    f"{gemm[0].value / 1e12:.0f}",
                    f"{gemm[0].value / assumed - 1:+.0%}",
                ]
            )
        assumed = GPU_EFFICIENCY["memory"][0] * d.bandwidth_bytes_per_s
        rows.append(
            [
                gpu,
                "bandwidth, GB/s",
                f"{assumed / 1e9:.0f}",
                f"{v.value / 1e9:.0f}",
                f"{v.value / assumed - 1:+.0%}",
            ]
        )
        for metric, what in (
            (OP_OVERHEAD, "one-element operator"),
            (TRAIN_STEP_OP_COST, f"operator of the design's training step at {CALIBRATION_TOKENS} tokens"),
        ):
            for cost in results.values(metric, **at)[:1]:
                rows.append(
                    [
                        gpu,
                        f"seconds per {what}, us",
                        f"{GPU_OVERHEAD_S[0] * 1e6:.0f}",
                        f"{cost.value * 1e6:.1f}",
                        f"{cost.value / GPU_OVERHEAD_S[0] - 1:+.0%}",
                    ]
                )
    if rows:
        section.tables.append(
            Table(
                "The time forecast's inputs against a GPU run",
                "Assumed: the datasheet figure at the forecast's stated efficiency (instruments/roofline.py "
                "GPU_EFFICIENCY), and its per-operator launch cost. Measured: the speed measurement on that GPU (its "
                "GEMM ceiling, a streaming copy, a chain of one-element operators, the design's own one-token step). "
                "Error: measured / assumed - 1.",
                ["GPU", "input", "assumed", "measured", "error"],
                rows,
            )
        )
