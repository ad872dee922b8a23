"""`kernels`: which SDPA backend runs for the variant's attention, and which are eligible."""

from ...catalog.declared.kernels import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import CPU_SEQ_CAP, measure_kernels

register(
    Measurement(
        SPEC,
        "which SDPA backend runs for the variant's attention, and which are eligible",
        measure_kernels,
        schedule=Schedule(
            cpu_seq_cap=CPU_SEQ_CAP,
            gpu=True,
            gpu_group="attention",
            gpu_share=0.05,
        ),
        shown=Shown(
            order=40,
            section=lazy_section(f"{__name__}.section", "kernels_section"),
        ),
    )
)
