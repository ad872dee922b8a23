"""`speed`: end-to-end training, prefill and decode tokens/s, and utilisation."""

from ...catalog.declared.speed import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import CPU_SEQ_CAP, measure_speed

register(
    Measurement(
        SPEC,
        "end-to-end training, prefill and decode tokens/s, and utilisation",
        measure_speed,
        schedule=Schedule(
            isolated=True,
            per_workload_on_cpu=False,
            cpu_seq_cap=CPU_SEQ_CAP,
            gpu=True,
            gpu_group="speed",
            gpu_share=0.40,
        ),
        shown=Shown(
            order=60,
            section=lazy_section(f"{__name__}.section", "speed_section"),
        ),
    )
)
