"""`kernels`: which SDPA backend runs for the variant's attention, and which are eligible."""

from ...results.metrics import Metric
from ..common import SEQ_LEN_REQUESTED
from ..registry import Measurement, lazy_section, register
from .run import CPU_SEQ_CAP, measure_kernels

_BACKEND = "label backend: flash, efficient, cudnn or math"
METRICS = (
    Metric("enabled_by_library", "flag", f"1 where x-transformers' sdpa_kernel list enables the backend; {_BACKEND}",
           ("x_transformers_sdp_kwargs",), ("backend",)),
    Metric("ran_train", "calls", "forward SDPA calls of one training step that ran on the backend (backend "
           "'none' where no SDPA call happens)", ("profiler",), ("backend",)),
    Metric("ran_inference", "calls", "SDPA calls of one no-grad forward that ran on the backend (backend 'none' "
           "where no SDPA call happens)", ("profiler",), ("backend",)),
    Metric("sdpa_is_causal", "flag", "the is_causal argument of the variant's attention call", ("captured_call",)),
    Metric("sdpa_attn_mask_bytes", "bytes", "storage of the attn_mask the variant passes (label mask: its dtype "
           "and shape, or none)", ("captured_call",), ("mask",)),
    Metric("sdpa_kv_heads_seen", "heads", "KV heads of the k tensor SDPA receives (the config's in the note)",
           ("captured_call",)),
    Metric("eligible_train", "flag", "1: the backend, forced, runs the call's forward and backward; 0: refused "
           f"(torch's reason in the note); {_BACKEND}", ("forced_sdpa_kernel",), ("backend",)),
    Metric("eligible_inference", "flag", "1: the backend, forced, runs the call's forward; 0: refused (torch's "
           f"reason in the note); {_BACKEND}", ("forced_sdpa_kernel",), ("backend",)),
    SEQ_LEN_REQUESTED,
)  # fmt: skip

register(
    Measurement(
        "kernels",
        "which SDPA backend runs for the variant's attention, and which are eligible",
        measure_kernels,
        METRICS,
        order=40,
        section=lazy_section(f"{__name__}.section", "kernels_section"),
        gpu=True,
        gpu_group="attention",
        gpu_share=0.05,
        cpu_seq_cap=CPU_SEQ_CAP,
    )
)
