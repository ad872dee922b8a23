"""`speed`: end-to-end training, prefill and decode tokens/s, and utilisation."""

from ...catalog.declared.speed import METRICS, SPEC
from ..registry import Measurement, lazy_section, register
from .run import CPU_SEQ_CAP, measure_speed

register(
    Measurement(
        "speed",
        "end-to-end training, prefill and decode tokens/s, and utilisation",
        measure_speed,
        METRICS,
        order=60,
        section=lazy_section(f"{__name__}.section", "speed_section"),
        isolated=True,
        gpu=True,
        gpu_group="speed",
        gpu_share=0.40,
        cpu_seq_cap=CPU_SEQ_CAP,
        version=SPEC.version,
    )
)
