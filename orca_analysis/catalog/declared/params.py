"""The metrics of `params` (measurements/params): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec

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

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    PARAMS,
    PARAMS_CLOSED_FORM_GAP,
    EMBEDDING_AND_LOGITS_SHARE,
    PARAMS_DELTA_VS_BASE,
) = METRICS


SPEC = Spec("params")
