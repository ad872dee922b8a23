"""`attention_speed`: the variant's own attention call, timed by SDPA backend and sequence length."""

from ...results.metrics import Metric
from ..common import SEQ_LEN_REQUESTED
from ..registry import Measurement, lazy_section, register
from .run import CPU_SEQ_CAP, FLOPS_METHOD, measure_attention_speed

_CASE = "label case: with_bias (the call as made) or no_bias (plain causal, no mask)"
METRICS = (
    Metric("sdpa_forward_flops", "FLOP", f"useful FLOPs of one attention forward, 4*b*h*n_q*n_k*d halved for causal; "
           f"{_CASE}", (FLOPS_METHOD,), ("case",)),
    Metric("sdpa_forward_time", "s", f"seconds per attention forward with the backend forced; {_CASE}",
           ("measured",), ("case", "backend", "repeat"), samples="repeat", direction="lower"),
    Metric("sdpa_forward_flops_per_s", "FLOP/s", "sdpa_forward_flops / the median sdpa_forward_time",
           ("measured_median",), ("case", "backend"), direction="higher"),
    Metric("sdpa_best_vs_gemm", "fraction", "the fastest backend's FLOP/s over attention_gemm_ceiling (label "
           "backend: the fastest)", ("derived",), ("case", "backend")),
    Metric("attention_gemm_ceiling", "FLOP/s", "dense GEMM FLOP/s (2 n^3 / median time) timed in this process, "
           "the ceiling sdpa_best_vs_gemm divides by (label size: n x n x n dtype)", ("measured_median",),
           ("size",)),
    SEQ_LEN_REQUESTED,
)  # fmt: skip

register(
    Measurement(
        "attention_speed",
        "attention forward time and FLOP/s by SDPA backend and sequence length",
        measure_attention_speed,
        METRICS,
        order=50,
        section=lazy_section(f"{__name__}.section", "attention_speed_section"),
        gpu=True,
        gpu_group="attention",
        gpu_share=0.10,
        cpu_seq_cap=CPU_SEQ_CAP,
        version=2,  # 2: every timing sample is a record
    )
)
