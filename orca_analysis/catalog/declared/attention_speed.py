"""The metrics of `attention_speed` (measurements/attention_speed): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec
from .common import SEQ_LEN_REQUESTED

FLOPS_METHOD = "useful_4bhnnd_causal_half"  # the method of sdpa_forward_flops

_CASE = "label case: with_bias (the call as made) or no_bias (plain causal, no mask)"
METRICS = (
    Metric(
        "sdpa_forward_flops",
        "FLOP",
        f"useful FLOPs of one attention forward, 4*b*h*n_q*n_k*d halved for causal; {_CASE}",
        (FLOPS_METHOD,),
        ("case",),
    ),
    Metric(
        "sdpa_forward_time",
        "s",
        f"seconds per attention forward with the backend forced; {_CASE}",
        ("measured",),
        ("case", "backend", "repeat"),
        samples="repeat",
        direction="lower",
    ),
    Metric(
        "sdpa_forward_flops_per_s",
        "FLOP/s",
        "sdpa_forward_flops / the median sdpa_forward_time",
        ("measured_median",),
        ("case", "backend"),
        direction="higher",
    ),
    Metric(
        "sdpa_best_vs_gemm",
        "fraction",
        "the fastest backend's FLOP/s over attention_gemm_ceiling (label backend: the fastest)",
        ("derived",),
        ("case", "backend"),
    ),
    Metric(
        "attention_gemm_ceiling",
        "FLOP/s",
        "dense GEMM FLOP/s (2 n^3 / median time) timed in this process, "
        "the ceiling sdpa_best_vs_gemm divides by (label size: n x n x n dtype)",
        ("measured_median",),
        ("size",),
    ),
    SEQ_LEN_REQUESTED,
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    SDPA_FORWARD_FLOPS,
    SDPA_FORWARD_TIME,
    SDPA_FORWARD_FLOPS_PER_S,
    SDPA_BEST_VS_GEMM,
    ATTENTION_GEMM_CEILING,
    SEQ_LEN_REQUESTED,
) = METRICS

# 2: every timing sample is a record

SPEC = Spec("attention_speed", on_remedies=False, version=2)
