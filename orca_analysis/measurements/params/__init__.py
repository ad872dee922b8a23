"""`params`: parameters by component, the library's count beside the closed form."""

from ...catalog.declared.params import METRICS, SPEC
from ..registry import Measurement, lazy_section, register
from .run import measure_params, summary

register(
    Measurement(
        "params",
        "parameters by component: library count and closed form",
        measure_params,
        METRICS,
        analytic=True,  # deterministic (counts, formulas, simulation): pooled beside others
        shares_walks=True,
        order=10,
        section=lazy_section(f"{__name__}.section", "params_section"),
        summary=summary,
        per_workload=False,
        version=SPEC.version,
    )
)
