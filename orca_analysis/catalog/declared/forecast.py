"""The metrics of `forecast` (measurements/forecast): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec

METRICS = (
    Metric(
        "sdpa_predicted_calls",
        "calls",
        "attention calls of one training-step forward that CUDA's SDPA would "
        "run on the backend (label backend: flash, efficient, cudnn, math, 'none' where no SDPA call happens, "
        "'unknown' where no rules exist for the installed torch), on the GPU (label gpu, a device catalogue "
        "id) in the compute dtype (label compute); the note names the call and each refused backend's reason",
        ("predicted",),
        ("gpu", "compute", "backend"),
    ),
    Metric(
        "gpu_peak",
        "bytes",
        "peak memory of a step (label step: train, prefill, decode) on the GPU (label "
        "gpu), in the dtype policy (label compute: float32, or bfloat16 autocast over float32 weights), by "
        "category (label category: total, parameters, gradients, optimizer_state, activations, temporaries, "
        "inputs, buffers): the no-allocation build walked as CUDA would run it (instruments/gpu_memory.py); "
        "a forecast, what max_memory_allocated would report without the CUDA context and workspaces",
        ("predicted",),
        ("gpu", "compute", "step", "category"),
    ),
    Metric(
        "gpu_max_batch",
        "sequences",
        "the largest batch whose step (label step: train, prefill) fits the "
        "GPU's memory at the workload's length, in the dtype policy (label compute): the peak replayed at any "
        "batch from the allocation timelines of walks at batch 2 and 3 (each storage affine in the batch), "
        "checked by a walk at the answer, to the byte; from walks alone where no replay can be made "
        "(instruments/max_batch.py; label search: replayed, or walked where no replay could be made); the base "
        "variant at the study's longest length",
        ("predicted",),
        ("gpu", "compute", "step", "search"),
    ),
    Metric(
        "gpu_step_floor",
        "s",
        "the roofline floor of a step (label step) on the GPU in the dtype policy: the "
        "sum over its operators of max(FLOPs / the dtype's dense peak, bytes / bandwidth), datasheet figures "
        "(instruments/roofline.py); no run can be faster",
        ("predicted",),
        ("gpu", "compute", "step"),
    ),
    Metric(
        "gpu_step_predicted",
        "s",
        "the predicted time of a step: the floor with each operator class at its "
        "stated efficiency, plus a per-operator overhead (instruments/roofline.py)",
        ("predicted",),
        ("gpu", "compute", "step"),
    ),
    Metric(
        "gpu_mfu_ceiling",
        "fraction",
        "the best MFU the step could reach: model FLOPs / (the floor x the "
        "policy's dense peak); label convention: palm (every (query, key) pair, PaLM App. B: above 1 where a "
        "causal kernel skips the masked half) or kernel (the pairs the attention kernel runs)",
        ("predicted",),
        ("gpu", "compute", "step", "convention"),
    ),
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    SDPA_PREDICTED_CALLS,
    GPU_PEAK,
    GPU_MAX_BATCH,
    GPU_STEP_FLOOR,
    GPU_STEP_PREDICTED,
    GPU_MFU_CEILING,
) = METRICS

# 2: GPU memory and time per step, the largest batch; 3: the MFU ceiling in two conventions; 4: CUDA's
# default AdamW (foreach), the largest batch doubled where the optimizer step holds the peak; 5: a FlexAttention
# design's predicted time and MFU ceiling skipped with the reason too

SPEC = Spec("forecast", version=6)
