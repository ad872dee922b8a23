"""`kernels`: which SDPA backend runs for the variant's attention, and which are eligible."""

from ...catalog.declared.kernels import METRICS, SPEC
from ..registry import Measurement, lazy_section, register
from .run import CPU_SEQ_CAP, measure_kernels

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
        version=SPEC.version,
    )
)
