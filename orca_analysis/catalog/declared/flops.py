"""The metrics of `flops` (measurements/flops): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec

COUNTS = ("counter", "closed_form", "counter_plain", "fvcore", "fvcore_plain")
_STEP = {
    "forward_dense": "one forward, every (query, key) pair counted",
    "forward_causal": "one forward, the causal pairs only",
    "train_step_dense": "forward + backward, every pair counted",
    "train_step_causal": "forward + backward, the causal pairs only (FlashAttention convention: recompute in)",
    "train_step_model_dense": "model FLOPs of forward + backward, every pair, no recompute (PaLM MFU numerator)",
    "train_step_model_causal": "model FLOPs of forward + backward, causal pairs, no recompute (causal-aware MFU)",
    "forward_executed": "one forward as the kernels run it (HFU numerator)",
    "train_step_executed": "forward + backward as the kernels run it: dense where a bias is passed, recompute in "
    "(HFU numerator)",
}
METRICS = (
    *(
        Metric(
            name,
            "FLOP",
            f"{text}; by component ('total' for the sum)",
            COUNTS,
            ("component",),
            cross_check="closed_form against counter; fvcore against counter (forward_dense)",
        )
        for name, text in _STEP.items()
    ),
    Metric("forward_estimate", "FLOP", "rule-of-thumb forward FLOPs", ("kaplan_6n", "palm")),
    Metric("train_step_estimate", "FLOP", "rule-of-thumb training-step FLOPs", ("kaplan_6n", "palm")),
    Metric(
        "fvcore_forward_as_shipped",
        "multiply-add",
        "plain fvcore's own number (1 per multiply-add)",
        ("fvcore_plain",),
    ),
    Metric(
        "closed_form_gap", "fraction", "(closed form - counter) / counter, total", ("derived",), ("quantity",)
    ),
    Metric(
        "fvcore_gap", "fraction", "(completed fvcore - counter) / counter, forward_dense total", ("derived",)
    ),
    Metric(
        "plain_missed_share",
        "fraction",
        "share of the counter's dense count a plain tool leaves out: FlopCounterMode of the training step, "
        "fvcore of the forward",
        ("derived",),
        ("tool",),
    ),
    Metric(
        "train_step_causal_per_token",
        "FLOP/token",
        "train_step_causal / (seq_len x batch)",
        ("counter",),
        ("component",),
    ),
    Metric(
        "train_step_causal_attention", "FLOP", "train_step_causal of attention_core + alibi", ("counter",)
    ),
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    FORWARD_DENSE,
    FORWARD_CAUSAL,
    TRAIN_STEP_DENSE,
    TRAIN_STEP_CAUSAL,
    TRAIN_STEP_MODEL_DENSE,
    TRAIN_STEP_MODEL_CAUSAL,
    FORWARD_EXECUTED,
    TRAIN_STEP_EXECUTED,
    FORWARD_ESTIMATE,
    TRAIN_STEP_ESTIMATE,
    FVCORE_FORWARD_AS_SHIPPED,
    CLOSED_FORM_GAP,
    FVCORE_GAP,
    PLAIN_MISSED_SHARE,
    TRAIN_STEP_CAUSAL_PER_TOKEN,
    TRAIN_STEP_CAUSAL_ATTENTION,
) = METRICS

# the step counts, by component (each counted by the counter and the closed form)
STEP_COUNTS = tuple(m for m in METRICS if m in _STEP)


# 2: model FLOPs without recompute (MFU) and executed FLOPs (HFU)

SPEC = Spec("flops", version=2)
