"""`attention_speed`: the variant's own attention call, timed by SDPA backend and sequence length."""

from ...catalog.declared.attention_speed import METRICS, SPEC
from ..registry import Measurement, lazy_section, register
from .run import CPU_SEQ_CAP, measure_attention_speed

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
        version=SPEC.version,
    )
)
