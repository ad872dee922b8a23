"""The metrics of `speed` (measurements/speed): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics import Metric
from ..specs import Spec
from .common import SEQ_LEN_REQUESTED

MED, CHECK = "measured_median", "cached_vs_full_forward"
# the methods of the utilisation metrics: MFU in PaLM's count, MFU over the causal pairs, HFU
CONVENTION_METHODS = ("mfu_palm", "mfu_causal", "hfu")
_DECODE = ("new", "prompt")  # new tokens decoded after a prompt of this many
_KV = ("attn", "kv_heads", "dropped", "new", "prompt")  # attn mqa|mha; the flags off to make the cache agree
_STEP = {"train": "a training step (forward, cross-entropy, backward, AdamW)", "prefill": "a prefill forward"}


def _phase_metrics(kind: str, what: str) -> tuple[Metric, ...]:
    counter = (
        "operator counter; method mfu_palm: model FLOPs, every pair, no recompute (PaLM); mfu_causal: "
        "model FLOPs, causal pairs; hfu: what the kernels execute, recompute included"
    )
    conv = CONVENTION_METHODS
    return (
        Metric(
            f"{kind}_time" if kind == "prefill" else "train_step_time",
            "s",
            f"seconds per {what}",
            ("measured",),
            ("repeat",),
            samples="repeat",
            direction="lower",
        ),
        Metric(
            f"{kind}_tokens_per_s",
            "tokens/s",
            f"batch x seq_len / the median time of {what}",
            (MED,),
            direction="higher",
        ),
        Metric(f"{kind}_flops", "FLOP", f"FLOPs of {what} at the length timed ({counter})", conv),
        Metric(f"{kind}_flops_per_s", "FLOP/s", f"{kind}_flops / the median time", conv, direction="higher"),
        Metric(
            f"{kind}_utilisation_vs_gemm",
            "fraction",
            f"{kind}_flops_per_s / gemm_ceiling (MFU or HFU, by method)",
            conv,
        ),
        Metric(
            f"{kind}_utilisation_vs_datasheet",
            "fraction",
            f"{kind}_flops_per_s / datasheet_peak (MFU or HFU, by method)",
            conv,
        ),
    )


# Tokens of the design's own step whose median calibrates its per-operator cost (the *_op_cost metrics): two,
# so its matrix products are matrix products as at every timed length; at one token they are matrix-vector
# products, which this CPU's BLAS runs at about twice the bandwidth (benchmarks/results/calibration.md).
CALIBRATION_TOKENS = 2

METRICS = (
    Metric("cpu_threads", "threads", "torch intra-op threads of a CPU run", ("torch.get_num_threads",)),
    Metric(
        "gemm_time",
        "s",
        "seconds per dense n x n @ n x n GEMM (label size: n x n x n dtype)",
        ("measured",),
        ("size", "repeat"),
        samples="repeat",
    ),
    Metric(
        "gemm_ceiling", "FLOP/s", "2 n^3 / the median gemm_time: the dense matmul ceiling", (MED,), ("size",)
    ),
    Metric(
        "datasheet_peak",
        "FLOP/s",
        "the device's dense 16-bit tensor-core peak from its datasheet",
        ("datasheet",),
        ("device_name",),
    ),
    Metric(
        "copy_time",
        "s",
        "seconds per streaming copy of 64 MiB into an existing buffer",
        ("measured",),
        ("repeat",),
        samples="repeat",
    ),
    Metric(
        "copy_bandwidth",
        "bytes/s",
        "2 x 64 MiB / the median copy_time: the device's streaming bandwidth, "
        "the time forecast's bandwidth on this machine",
        (MED,),
    ),
    Metric(
        "op_overhead",
        "s",
        "seconds per operator of a chain of one-element operations, forward and backward "
        "(eager PyTorch with autograd): the time forecast's per-operator cost on this machine",
        (MED,),
    ),
    *(
        Metric(
            f"{name}_{kind}",
            "s",
            f"the {kind} of {what} on this CPU from its operators and the measured "
            "peaks (instruments/roofline.py): "
            + (
                "sum of max(FLOPs / GEMM ceiling, bytes / copy bandwidth)"
                if kind == "floor"
                else "the floor plus op_overhead per operator"
            ),
            ("predicted",),
        )
        for name, what in (("train_step", "a training step"), ("prefill", "a prefill"))
        for kind in ("floor", "predicted")
    ),
    *(
        m
        for name, what in (("train_step", "training step"), ("prefill", "prefill"))
        for m in (
            Metric(
                f"{name}_op_cost",
                "s",
                f"seconds per operator of this design's own eager {what} on this CPU: (its "
                f"median at {CALIBRATION_TOKENS} tokens x batch 1 - its floor) / its operators (the calibration of "
                f"{name}_calibrated)",
                (MED,),
            ),
            Metric(
                f"{name}_calibrated",
                "s",
                f"the predicted {what} calibrated on the design itself: the floor plus "
                f"{name}_op_cost per operator (instruments/roofline.py)",
                ("predicted",),
            ),
        )
    ),
    *(m for kind, what in _STEP.items() for m in _phase_metrics(kind, what)),
    Metric(
        "decode_cache_pass",
        "pass",
        "1: cached decoding's logits match a full forward within the dtype "
        "tolerance; 0: they disagree or decoding crashes (the problem in the note)",
        (CHECK,),
        _DECODE,
    ),
    Metric(
        "decode_cache_agreement",
        "fraction",
        "max |cached - full-forward logit| / max |logit| (skipped where cached decoding crashes)",
        (CHECK,),
        _DECODE,
    ),
    Metric(
        "decode_cached_time",
        "s",
        "seconds per decode sample with the KV cache",
        ("measured",),
        (*_DECODE, "repeat"),
        samples="repeat",
        direction="lower",
    ),
    Metric(
        "decode_cached_tokens_per_s",
        "tokens/s",
        "batch x new / the median decode_cached_time",
        (MED,),
        _DECODE,
        direction="higher",
    ),
    Metric(
        "decode_uncached_time",
        "s",
        "seconds per decode sample without the cache (a full forward per token)",
        ("measured",),
        (*_DECODE, "repeat"),
        samples="repeat",
        direction="lower",
    ),
    Metric(
        "decode_uncached_tokens_per_s",
        "tokens/s",
        "batch x new / the median decode_uncached_time (skipped where the cache agrees)",
        (MED,),
        _DECODE,
        direction="higher",
    ),
    Metric(
        "kv_ablation_cache_pass",
        "pass",
        "decode_cache_pass of the base with one KV head (attn mqa) or one "
        "per query head (mha), the flags `dropped` off",
        (CHECK,),
        _KV,
    ),
    Metric(
        "kv_ablation_cache_agreement",
        "fraction",
        "decode_cache_agreement of the mqa / mha builds",
        (CHECK,),
        _KV,
    ),
    Metric(
        "kv_ablation_decode_time",
        "s",
        "seconds per cached decode sample of the mqa / mha builds",
        ("measured",),
        (*_KV, "repeat"),
        samples="repeat",
        direction="lower",
    ),
    Metric(
        "kv_ablation_decode_tokens_per_s",
        "tokens/s",
        "batch x new / the median kv_ablation_decode_time",
        (MED,),
        _KV,
        direction="higher",
    ),
    Metric(
        "kv_ablation_cache_bytes",
        "bytes",
        "KV cache of seq_len tokens: 2 x depth x batch x kv heads x tokens "
        "x head dim x bytes per element (formulas/memory.py kv_cache_bytes)",
        ("closed_form",),
        _KV,
    ),
    Metric(
        "kv_ablation_generate_cache",
        "bytes",
        "the largest cache x-transformers keeps between the steps of "
        "generate(cache_kv=True) on the mqa / mha builds, weighed on its tensors (part kv: the K/V at the last "
        "step; prompt_object: every tensor of the prompt's cache object; object: the largest cache object of "
        "the call; tokens: what it holds); closed_form: formulas/memory.py kv_cache_bytes / cache_object at "
        "the same tokens (kv and prompt_object: the closed form models no cached step's object)",
        ("measured", "closed_form"),
        (*_KV, "part", "tokens"),
    ),
    Metric(
        "kv_ablation_decode_speedup",
        "ratio",
        "median kv_ablation_decode_time of mha / of mqa: how much faster one KV head decodes",
        ("derived",),
        ("dropped",),
        direction="higher",
    ),
    Metric(
        "train_step_repeat_diff",
        "fraction",
        "|again - first| / first of the medians of the base's training "
        "step timed twice in one process (both in the note)",
        ("timed_twice",),
        direction="lower",
    ),
    SEQ_LEN_REQUESTED,
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    CPU_THREADS,
    GEMM_TIME,
    GEMM_CEILING,
    DATASHEET_PEAK,
    COPY_TIME,
    COPY_BANDWIDTH,
    OP_OVERHEAD,
    TRAIN_STEP_FLOOR,
    TRAIN_STEP_PREDICTED,
    PREFILL_FLOOR,
    PREFILL_PREDICTED,
    TRAIN_STEP_OP_COST,
    TRAIN_STEP_CALIBRATED,
    PREFILL_OP_COST,
    PREFILL_CALIBRATED,
    TRAIN_STEP_TIME,
    TRAIN_TOKENS_PER_S,
    TRAIN_FLOPS,
    TRAIN_FLOPS_PER_S,
    TRAIN_UTILISATION_VS_GEMM,
    TRAIN_UTILISATION_VS_DATASHEET,
    PREFILL_TIME,
    PREFILL_TOKENS_PER_S,
    PREFILL_FLOPS,
    PREFILL_FLOPS_PER_S,
    PREFILL_UTILISATION_VS_GEMM,
    PREFILL_UTILISATION_VS_DATASHEET,
    DECODE_CACHE_PASS,
    DECODE_CACHE_AGREEMENT,
    DECODE_CACHED_TIME,
    DECODE_CACHED_TOKENS_PER_S,
    DECODE_UNCACHED_TIME,
    DECODE_UNCACHED_TOKENS_PER_S,
    KV_ABLATION_CACHE_PASS,
    KV_ABLATION_CACHE_AGREEMENT,
    KV_ABLATION_DECODE_TIME,
    KV_ABLATION_DECODE_TOKENS_PER_S,
    KV_ABLATION_CACHE_BYTES,
    KV_ABLATION_GENERATE_CACHE,
    KV_ABLATION_DECODE_SPEEDUP,
    TRAIN_STEP_REPEAT_DIFF,
    SEQ_LEN_REQUESTED,
) = METRICS


@dataclass(frozen=True)
class StepMetrics:
    """The metrics of one timed step ("train" or "prefill"), for code that handles both alike."""

    time: Metric
    flops: Metric
    flops_per_s: Metric
    utilisation_vs_gemm: Metric
    utilisation_vs_datasheet: Metric
    floor: Metric
    predicted: Metric
    calibrated: Metric
    op_cost: Metric


STEP = {
    "train": StepMetrics(
        TRAIN_STEP_TIME,
        TRAIN_FLOPS,
        TRAIN_FLOPS_PER_S,
        TRAIN_UTILISATION_VS_GEMM,
        TRAIN_UTILISATION_VS_DATASHEET,
        TRAIN_STEP_FLOOR,
        TRAIN_STEP_PREDICTED,
        TRAIN_STEP_CALIBRATED,
        TRAIN_STEP_OP_COST,
    ),
    "prefill": StepMetrics(
        PREFILL_TIME,
        PREFILL_FLOPS,
        PREFILL_FLOPS_PER_S,
        PREFILL_UTILISATION_VS_GEMM,
        PREFILL_UTILISATION_VS_DATASHEET,
        PREFILL_FLOOR,
        PREFILL_PREDICTED,
        PREFILL_CALIBRATED,
        PREFILL_OP_COST,
    ),
}

# 2: multi-query vs multi-head decoding, repeated timing; 3: every sample; 4: MFU (PaLM), HFU; 5: the time
# forecast's check on this CPU (floor, predicted); 6: the prediction calibrated on the design's own
# one-token step

SPEC = Spec("speed", version=7, on_remedies=False)
