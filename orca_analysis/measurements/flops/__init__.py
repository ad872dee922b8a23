"""`flops`: FLOPs by component, forward and training step, dense and causal, counted three ways."""

from ...catalog.declared.flops import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_flops
from .summary import flops_summary, flops_text

register(
    Measurement(
        SPEC,
        "FLOPs by component, forward and training step, dense and causal: counter, fvcore, closed form",
        measure_flops,
        schedule=Schedule(
            analytic=True,  # deterministic (counts, formulas, simulation): pooled beside others
            shares_walks=True,
        ),
        shown=Shown(
            order=20,
            section=lazy_section(f"{__name__}.section", "flops_section"),
            summary=flops_summary,
            summary_text=flops_text,
        ),
    )
)
