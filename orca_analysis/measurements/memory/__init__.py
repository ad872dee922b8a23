"""`memory`: bytes of a training step and of inference, closed form, simulated (no allocation), measured."""

from ...catalog.declared.memory import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_memory
from .summary import memory_summary, memory_summary_text

register(
    Measurement(
        SPEC,
        "bytes of a training step and of inference: closed form and simulated (no allocation)",
        measure_memory,
        schedule=Schedule(
            analytic=True,  # deterministic (counts, formulas, simulation): pooled beside others
            walks_first=True,  # its training-step walks count the FLOPs too: `flops` then finds them kept
            per_workload=False,  # one call per variant: it sweeps memory versus sequence length itself
            shares_walks=True,
        ),
        shown=Shown(
            order=30,
            section=lazy_section(f"{__name__}.section", "memory_section"),
            summary=memory_summary,
            summary_text=memory_summary_text,
        ),
    )
)
