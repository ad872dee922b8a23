"""The metrics of `memory` (measurements/memory): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..labels import TOTAL_CATEGORY
from ..metrics import Metric
from ..specs import Spec

CF, SIM, MEAS = "closed_form", "simulated", "measured"
_CATEGORY = (
    "label category: total, parameters, gradients, optimizer_state, activations, temporaries, inputs, buffers"
)
_PEAKS = {
    "peak_train": ("a training step (forward, cross-entropy, backward, AdamW step)", (CF, SIM, MEAS)),
    "peak_prefill": (
        "a prefill (no-grad forward with return_intermediates, as generate calls it)",
        (CF, SIM, MEAS),
    ),
    "peak_decode_cached": ("one decode step on the prefill's cache", (CF, SIM)),
}
TOTAL = TOTAL_CATEGORY  # the labels of a peak's total (catalog/labels.py)
METRICS = (
    *(
        Metric(
            name,
            "bytes",
            f"peak bytes of {what}; {_CATEGORY} (at the moment of the peak)",
            methods,
            ("category",),
            direction="lower",
            cross_check="closed_form against simulated, simulated against measured (memory_rel_error)",
        )
        for name, (what, methods) in _PEAKS.items()
    ),
    *(
        Metric(
            f"{name}_phase",
            "bytes",
            f"peak bytes of each phase of {what} (forward, backward, optimizer)",
            methods,
            ("phase",),
        )
        for name, (what, methods) in _PEAKS.items()
    ),
    Metric(
        "peak_decode_uncached",
        "bytes",
        "peak of generate(cache_kv=False): a prefill of the prompt slid to max_seq_len",
        (CF, SIM),
    ),
    Metric("peak_train_reserved", "bytes", "torch.cuda.max_memory_reserved over the training step", (MEAS,)),
    Metric("peak_prefill_reserved", "bytes", "torch.cuda.max_memory_reserved over the prefill", (MEAS,)),
    Metric(
        "peak_train_module",
        "bytes",
        "the training step's peak while a module runs (pass forward|backward)",
        (SIM,),
        ("pass", "module"),
    ),
    Metric(
        "activation_term",
        "bytes",
        "a training-step activation term of formulas/memory.py, whole model "
        "(alibi_mask, alibi_build, attention, feedforward, held_until_forward_returns, logits)",
        (CF,),
        ("term",),
    ),
    Metric("peak_train_bf16_mixed", "bytes", "training-step peak in ZeRO's bf16 mixed precision", (CF,)),
    Metric(
        "kv_cache_size",
        "bytes",
        "the KV cache of a prompt: K and V of every layer",
        (CF, SIM),
        cross_check="closed_form against simulated (memory_rel_error)",
    ),
    Metric(
        "cache_object",
        "bytes",
        "what x-transformers keeps between decode steps (KV cache, hidden states)",
        (CF, SIM),
        cross_check="closed_form against simulated (memory_rel_error)",
    ),
    Metric(
        "fits_train",
        "bool",
        "the simulated training-step peak fits a device of this nominal capacity",
        (SIM,),
        ("capacity",),
    ),
    Metric(
        "fits_inference",
        "bool",
        "the simulated prefill peak fits a device of this nominal capacity",
        (SIM,),
        ("capacity",),
    ),
    Metric(
        "training_state",
        "bytes",
        "weights, gradients and AdamW state (part) in fp32 or bf16_mixed (precision)",
        (CF,),
        ("precision", "part"),
    ),
    Metric(
        "memory_rel_error",
        "fraction",
        "(first - second) / second of a pair of methods for a quantity "
        "(a metric), over its whole peak (phase all) or one phase",
        ("derived",),
        ("quantity", "pair", "phase"),
    ),
    Metric(
        "alibi_bytes_at_peak",
        "bytes",
        "ALiBi tensors alive at the training-step peak: the closed form's "
        "moment, or those the tracker finds alive at the simulated peak",
        (CF, SIM),
        cross_check="closed_form against simulated (memory_rel_error)",
    ),
    Metric(
        "alibi_share_of_peak",
        "fraction",
        "alibi_bytes_at_peak / the training-step peak of the same method",
        (CF, SIM),
    ),
    Metric(
        "peak_train_part",
        "bytes",
        "the simulated training-step peak in parts that sum to it (part: "
        "alibi_bias, the ALiBi tensors alive; weight_state, parameters + gradients + AdamW; other, every "
        "other activation, temporary, input and buffer)",
        (SIM,),
        ("part",),
        direction="lower",
    ),
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    PEAK_TRAIN,
    PEAK_PREFILL,
    PEAK_DECODE_CACHED,
    PEAK_TRAIN_PHASE,
    PEAK_PREFILL_PHASE,
    PEAK_DECODE_CACHED_PHASE,
    PEAK_DECODE_UNCACHED,
    PEAK_TRAIN_RESERVED,
    PEAK_PREFILL_RESERVED,
    PEAK_TRAIN_MODULE,
    ACTIVATION_TERM,
    PEAK_TRAIN_BF16_MIXED,
    KV_CACHE_SIZE,
    CACHE_OBJECT,
    FITS_TRAIN,
    FITS_INFERENCE,
    TRAINING_STATE,
    MEMORY_REL_ERROR,
    ALIBI_BYTES_AT_PEAK,
    ALIBI_SHARE_OF_PEAK,
    PEAK_TRAIN_PART,
) = METRICS

# the metrics a step's name picks (a walk's step: "train", "prefill", "decode_cached")
PEAK = {"train": PEAK_TRAIN, "prefill": PEAK_PREFILL, "decode_cached": PEAK_DECODE_CACHED}
PHASE_OF = {
    PEAK_TRAIN: PEAK_TRAIN_PHASE,
    PEAK_PREFILL: PEAK_PREFILL_PHASE,
    PEAK_DECODE_CACHED: PEAK_DECODE_CACHED_PHASE,
}
FITS = {"train": FITS_TRAIN, "prefill": FITS_INFERENCE}
RESERVED = {"train": PEAK_TRAIN_RESERVED, "prefill": PEAK_PREFILL_RESERVED}

# 2: the real-tensor runs moved to `memory_measured`; 3: ALiBi at the simulated peak; 4: fits from the
# simulated peaks, not the closed form

SPEC = Spec("memory", version=4)
