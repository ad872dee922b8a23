"""`params`: parameters by component, the library's count beside the closed form."""

from ...results.metrics import Metric
from ..registry import Measurement, lazy_section, register
from .run import measure_params, summary

METRICS = (
    Metric(
        "params",
        "params",
        "parameters, in total and by component (embedding, attention, feedforward, norm, logits, other)",
        methods=("counter", "closed_form", "library_count"),
        labels=("component",),
        direction="lower",
        cross_check="closed_form (formulas/params.py) against the counter",
    ),
    Metric("params_closed_form_gap", "fraction", "(counter - closed form) / counter, total", ("derived",)),
    Metric(
        "embedding_and_logits_share",
        "fraction",
        "embedding and logits tables over all parameters",
        ("counter",),
    ),
    Metric("params_delta_vs_base", "fraction", "total parameters / the base variant's - 1", ("counter",)),
)

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
    )
)
