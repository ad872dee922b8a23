"""The forecast of each attention call on each GPU of the device catalogue, in float32 and in bfloat16
(autocast over float32 weights): captured once per compute dtype from the no-allocation build, predicted per
device (instruments/attention_forecast.py, instruments/sdpa_rules.py). Then the GPU memory of each step,
simulated as CUDA would run it (instruments/gpu_memory.py): one walk for the GPUs whose predicted kernels
agree, and, for the base variant at the study's longest length, the largest batch that fits each GPU
(instruments/gpu_forecast.py). Predictions, stored as such."""

from __future__ import annotations

from ...catalog.declared.forecast import (
    GPU_MAX_BATCH,
    GPU_MFU_CEILING,
    GPU_PEAK,
    GPU_STEP_FLOOR,
    GPU_STEP_PREDICTED,
    SDPA_PREDICTED_CALLS,
)
from ...catalog.labels import Breakdown, Search
from ...catalog.vocabulary import Cause, Method
from ...devices import Device, load_devices
from ...instruments.attention_forecast import attention_calls
from ...instruments.gpu_forecast import METHOD, TIME_METHOD, walk
from ...instruments.max_batch import BATCH_STEPS, largest_batches, walks_at_1_2_3
from ...instruments.roofline import CONVENTIONS
from ...instruments.sdpa_rules import predict
from ...results import Record
from ...study.schema import Study, Variant
from ..recorder import Recorder

COMPUTE = (
    "float32",
    "bfloat16",
)  # the dtype policies a user trains in (bfloat16: autocast, fp32 master weights)


def measure_forecast(variant: Variant, study: Study) -> list[Record]:
    rec = Recorder(study.name, variant, "forecast", dtype=study.workloads.dtype)
    devices = load_devices()
    longest = max(study.workloads.pairs())
    for n, b in study.workloads.pairs():
        at = rec.at(seq_len=n, batch=b)
        if variant.config.layers.get("alibi_in_kernel"):
            _flex(at, devices.values())
            continue
        for compute in COMPUTE:
            calls, enabled = attention_calls(variant.config, n, b, compute, training=True)
            kernels: dict[tuple, list[Device]] = {}  # the predicted backends of the calls -> the GPUs
            for gpu in devices.values():
                if not calls:
                    why = (
                        "FlexAttention runs attention (alibi_in_kernel)"
                        if variant.config.layers.get("alibi_in_kernel")
                        else "attn_flash is off: attention runs in plain PyTorch"
                    )
                    at.add(
                        SDPA_PREDICTED_CALLS,
                        0.0,
                        Method.PREDICTED,
                        {"gpu": gpu.id, "compute": compute, "backend": "none"},
                        note=why,
                    )
                    kernels.setdefault((), []).append(gpu)
                    continue
                by_backend: dict[str, tuple[int, list[str]]] = {}
                for call, count in calls.items():
                    p = predict(call, gpu, enabled)
                    why = "; ".join(f"{k} refused: {r}" for k, r in p.refused.items()) or p.method
                    total, notes = by_backend.get(p.backend, (0, []))
                    by_backend[p.backend] = (total + count, [*notes, f"{count} x [{call.label}]: {why}"])
                for backend, (count, notes) in by_backend.items():
                    at.add(
                        SDPA_PREDICTED_CALLS,
                        float(count),
                        Method.PREDICTED,
                        {"gpu": gpu.id, "compute": compute, "backend": backend},
                        note=" | ".join(notes),
                    )
                kernels.setdefault(tuple(sorted(by_backend)), []).append(gpu)
            for gpus in kernels.values():
                _memory(at, variant, compute, n, b, gpus)
                if study.is_base(variant) and (n, b) == longest:
                    _largest_batch(at, variant, compute, n, gpus)
    return rec.records


FLEX = (
    "FlexAttention (alibi_in_kernel) runs attention under torch.compile, which torch 2.13 cannot trace "
    "inside the call capture on a CPU build, and its MemTracker cannot follow the flex_attention operator: no "
    "SDPA call to predict, and this memory and time need a GPU run (max_memory_allocated, the profiler)"
)


def _flex(at, gpus) -> None:  # noqa: ANN001
    """A FlexAttention design: no SDPA call, and no walk this machine can make; one reason for each record."""
    for gpu in gpus:
        for compute in COMPUTE:
            labels = {"gpu": gpu.id, "compute": compute}
            at.add(SDPA_PREDICTED_CALLS, 0.0, Method.PREDICTED, {**labels, "backend": "none"}, note=FLEX)
            for step in ("train", "prefill"):
                at.skipped(
                    GPU_PEAK,
                    Method.PREDICTED,
                    FLEX,
                    {**labels, "step": step, "category": Breakdown.TOTAL},
                    Cause.NEEDS_GPU,
                )
                at.skipped(GPU_STEP_FLOOR, Method.PREDICTED, FLEX, {**labels, "step": step}, Cause.NEEDS_GPU)
                at.skipped(
                    GPU_STEP_PREDICTED, Method.PREDICTED, FLEX, {**labels, "step": step}, Cause.NEEDS_GPU
                )
                for convention in CONVENTIONS:
                    at.skipped(
                        GPU_MFU_CEILING,
                        Method.PREDICTED,
                        FLEX,
                        {**labels, "step": step, "convention": convention},
                        Cause.NEEDS_GPU,
                    )


def _memory(at, variant: Variant, compute: str, n: int, b: int, gpus: list[Device]) -> None:  # noqa: ANN001
    """Each step's simulated peak, by category, and its time (floor, predicted, MFU ceiling), for GPUs that run
    the same kernels: one walk."""
    w = walk(variant.config, gpus[0], compute, n, b)
    kernels = ", ".join(f"{k} x{v}" for k, v in sorted(w.routed.items())) or "no SDPA call"
    for gpu in gpus:
        labels = {"gpu": gpu.id, "compute": compute}
        for step, m in w.memory.items():
            if m.peak is None:
                continue
            note = f"{METHOD}; attention calls routed: {kernels}"
            for category, value in {"total": m.peak, **m.categories}.items():
                at.add(
                    GPU_PEAK,
                    float(value),
                    Method.PREDICTED,
                    {**labels, "step": step, "category": category},
                    note=note,
                )
        for step, t in w.times(gpu, compute).items():
            how = f"{t.operators} operators; {TIME_METHOD}"
            at.add(GPU_STEP_FLOOR, t.floor_s, Method.PREDICTED, {**labels, "step": step}, note=how)
            at.add(GPU_STEP_PREDICTED, t.predicted_s, Method.PREDICTED, {**labels, "step": step}, note=how)
            for convention, value in (("palm", t.mfu_ceiling), ("kernel", t.mfu_ceiling_kernel)):
                at.add(
                    GPU_MFU_CEILING,
                    value,
                    Method.PREDICTED,
                    {**labels, "step": step, "convention": convention},
                    note=f"model FLOPs ({convention}) / (floor x {gpu.peak_flops[compute]:.4g} FLOP/s)",
                )


def _largest_batch(at, variant: Variant, compute: str, n: int, gpus: list[Device]) -> None:  # noqa: ANN001
    """The largest batch per GPU and step: the walks at batch 1, 2 and 3 shared, the checks in one more build."""
    walked = walks_at_1_2_3(variant.config, gpus[0], compute, n, BATCH_STEPS)
    largest = largest_batches(variant.config, gpus, compute, n, walked)
    for step in BATCH_STEPS:
        for gpu in gpus:
            mb = largest[gpu.id][step]
            note = (
                f"{mb.method}; intercept {mb.intercept:,} B, slope {mb.slope:,} B per sequence, against "
                f"{gpu.memory_bytes:,} B"
            )
            at.add(
                GPU_MAX_BATCH,
                float(mb.batch),
                Method.PREDICTED,
                {
                    "gpu": gpu.id,
                    "compute": compute,
                    "step": step,
                    "search": Search.REPLAYED if mb.replayed else Search.WALKED,
                },
                note=note,
            )
