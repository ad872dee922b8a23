"""The metrics of `design` (measurements/design): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec

BUILT, SIM, DIFF = ("built_model",), ("simulated",), ("build_diff",)
METRICS = (
    Metric("vocab_rows", "tokens", "rows of the built token-embedding table", BUILT),
    Metric("context_length", "tokens", "the built wrapper's max_seq_len", BUILT),
    Metric(
        "context_forward",
        "pass",
        "a forward of max_seq_len tokens on the no-allocation build ran (1) or raised (0)",
        SIM,
    ),
    Metric(
        "abs_pos_params",
        "params",
        "parameters of the built absolute position embedding (0: none learned)",
        BUILT,
    ),
    Metric("alibi_heads", "heads", "rows of the built ALiBi slopes (0: no ALiBi)", BUILT),
    Metric("kv_heads", "heads", "key projection width / head width, first attention", BUILT),
    Metric(
        "kv_group",
        "heads",
        "query heads per key/value head (1: MHA, all heads: MQA, between: GQA); the note names the kind",
        BUILT,
    ),
    Metric(
        "position_sources",
        "count",
        "sources of position information in the built model (0: the causal mask alone); the note names them",
        BUILT,
    ),
    Metric(
        "shifted_channels",
        "channels",
        "channels of the output at position t that change with the input "
        "at t - 1, through the built ShiftTokens",
        BUILT,
    ),
    Metric("shift_offset", "tokens", "the largest offset ShiftTokens takes a channel from", BUILT),
    Metric(
        "flag_changes_build",
        "bool",
        "building with and without the flag differ (1) or not (0); the note names the first difference",
        DIFF,
        ("flag",),
    ),
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    VOCAB_ROWS,
    CONTEXT_LENGTH,
    CONTEXT_FORWARD,
    ABS_POS_PARAMS,
    ALIBI_HEADS,
    KV_HEADS,
    KV_GROUP,
    POSITION_SOURCES,
    SHIFTED_CHANNELS,
    SHIFT_OFFSET,
    FLAG_CHANGES_BUILD,
) = METRICS

# 2: kv_group, position_sources; every flag the study sets is built without

SPEC = Spec("design", version=2)
