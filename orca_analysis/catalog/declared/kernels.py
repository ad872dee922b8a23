"""The metrics of `kernels` (measurements/kernels): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec
from .common import SEQ_LEN_REQUESTED

_BACKEND = "label backend: flash, efficient, cudnn or math"
METRICS = (
    Metric(
        "enabled_by_library",
        "flag",
        f"1 where x-transformers' sdpa_kernel list enables the backend; {_BACKEND}",
        ("x_transformers_sdp_kwargs",),
        ("backend",),
    ),
    Metric(
        "ran_train",
        "calls",
        "forward SDPA calls of one training step that ran on the backend (backend "
        "'none' where no SDPA call happens)",
        ("profiler",),
        ("backend",),
    ),
    Metric(
        "ran_inference",
        "calls",
        "SDPA calls of one no-grad forward that ran on the backend (backend 'none' "
        "where no SDPA call happens)",
        ("profiler",),
        ("backend",),
    ),
    Metric(
        "sdpa_is_causal", "flag", "the is_causal argument of the variant's attention call", ("captured_call",)
    ),
    Metric(
        "sdpa_attn_mask_bytes",
        "bytes",
        "storage of the attn_mask the variant passes (label mask: its dtype and shape, or none)",
        ("captured_call",),
        ("mask",),
    ),
    Metric(
        "sdpa_kv_heads_seen",
        "heads",
        "KV heads of the k tensor SDPA receives (the config's in the note)",
        ("captured_call",),
    ),
    Metric(
        "eligible_train",
        "flag",
        "1: the backend, forced, runs the call's forward and backward; 0: refused "
        f"(torch's reason in the note); {_BACKEND}",
        ("forced_sdpa_kernel",),
        ("backend",),
    ),
    Metric(
        "eligible_inference",
        "flag",
        "1: the backend, forced, runs the call's forward; 0: refused (torch's "
        f"reason in the note); {_BACKEND}",
        ("forced_sdpa_kernel",),
        ("backend",),
    ),
    SEQ_LEN_REQUESTED,
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    ENABLED_BY_LIBRARY,
    RAN_TRAIN,
    RAN_INFERENCE,
    SDPA_IS_CAUSAL,
    SDPA_ATTN_MASK_BYTES,
    SDPA_KV_HEADS_SEEN,
    ELIGIBLE_TRAIN,
    ELIGIBLE_INFERENCE,
    SEQ_LEN_REQUESTED,
) = METRICS


SPEC = Spec("kernels")
