"""`params`: parameters by component, the library's count beside the closed form."""

from ...catalog.declared.params import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_params, summary

register(
    Measurement(
        SPEC,
        "parameters by component: library count and closed form",
        measure_params,
        schedule=Schedule(
            analytic=True,  # deterministic (counts, formulas, simulation): pooled beside others
            per_workload=False,
            shares_walks=True,
        ),
        shown=Shown(
            order=10,
            section=lazy_section(f"{__name__}.section", "params_section"),
            summary=summary,
        ),
    )
)
