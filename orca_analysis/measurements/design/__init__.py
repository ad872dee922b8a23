"""`design`: what the built model is (vocabulary, context, ALiBi and KV heads, token shift, which flags
change the build), read from the model itself, so the notes' stated values are checked, not restated."""

from ...results.metrics import Metric
from ..registry import Measurement, lazy_section, register
from .run import measure_design

BUILT, SIM, DIFF = ("built_model",), ("simulated",), ("build_diff",)
METRICS = (
    Metric("vocab_rows", "tokens", "rows of the built token-embedding table", BUILT),
    Metric("context_length", "tokens", "the built wrapper's max_seq_len", BUILT),
    Metric("context_forward", "pass", "a forward of max_seq_len tokens on the no-allocation build ran (1) or "
           "raised (0)", SIM),
    Metric("abs_pos_params", "params", "parameters of the built absolute position embedding (0: none learned)",
           BUILT),
    Metric("alibi_heads", "heads", "rows of the built ALiBi slopes (0: no ALiBi)", BUILT),
    Metric("kv_heads", "heads", "key projection width / head width, first attention", BUILT),
    Metric("kv_group", "heads", "query heads per key/value head (1: MHA, all heads: MQA, between: GQA); the note "
           "names the kind", BUILT),
    Metric("position_sources", "count", "sources of position information in the built model (0: the causal mask "
           "alone); the note names them", BUILT),
    Metric("shifted_channels", "channels", "channels of the output at position t that change with the input "
           "at t - 1, through the built ShiftTokens", BUILT),
    Metric("shift_offset", "tokens", "the largest offset ShiftTokens takes a channel from", BUILT),
    Metric("flag_changes_build", "bool", "building with and without the flag differ (1) or not (0); the note "
           "names the first difference", DIFF, ("flag",)),
)  # fmt: skip

register(
    Measurement(
        "design",
        "what the built model is: vocabulary, context, ALiBi and KV heads, token shift, which flags act",
        measure_design,
        METRICS,
        analytic=True,
        order=12,
        version=2,  # 2: kv_group, position_sources; every flag the study sets is built without
        section=lazy_section(f"{__name__}.section", "design_section"),
        per_workload=False,
    )
)
