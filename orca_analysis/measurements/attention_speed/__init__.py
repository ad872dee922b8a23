"""`attention_speed`: the variant's own attention call, timed by SDPA backend and sequence length."""

from ...catalog.declared.attention_speed import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import CPU_SEQ_CAP, measure_attention_speed

register(
    Measurement(
        SPEC,
        "attention forward time and FLOP/s by SDPA backend and sequence length",
        measure_attention_speed,
        schedule=Schedule(
            cpu_seq_cap=CPU_SEQ_CAP,
            gpu=True,
            gpu_group="attention",
            gpu_share=0.10,
        ),
        shown=Shown(
            order=50,
            section=lazy_section(f"{__name__}.section", "attention_speed_section"),
        ),
    )
)
