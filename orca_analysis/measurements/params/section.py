"""The parameters section: per variant, the counter's components beside the closed form."""

from __future__ import annotations

import pandas as pd

from ...catalog.declared.flops import CLOSED_FORM_GAP
from ...catalog.declared.params import PARAMS, PARAMS_CLOSED_FORM_GAP, PARAMS_DELTA_VS_BASE
from ...catalog.labels import Breakdown
from ...catalog.vocabulary import Method
from ...formulas.params import PARAM_COMPONENTS
from ...kit.figures import param_split, params_vs_axes
from ...kit.format import Quantity
from ...kit.sections import SHAPE_AXES, Section, Table, axes_of, shape_of, variant_order
from ...results.query import Results

COLUMNS = ("total", *PARAM_COMPONENTS, "other")


def params_frame(results: Results, study) -> pd.DataFrame:
    """One row per variant: the counter's components, the closed-form total and the stored derivations."""
    rows, shapes, on = [], shape_of(study), axes_of(study)
    for vid in variant_order(study):
        counted = {
            v.get("component"): v.value for v in results.values(PARAMS, variant=vid, method=Method.COUNTER)
        }
        if not counted:
            continue
        rows.append(
            {
                "variant_id": vid,
                **shapes[vid],
                "on_axis": on[vid],
                **counted,
                "layers": counted["attention"] + counted["feedforward"] + counted["norm"],
                "closed_form_total": results.number(
                    PARAMS, variant=vid, method=Method.CLOSED_FORM, component=Breakdown.TOTAL
                ),
                CLOSED_FORM_GAP: results.number(PARAMS_CLOSED_FORM_GAP, variant=vid),
                "delta_vs_base": results.number(PARAMS_DELTA_VS_BASE, variant=vid),
            }
        )
    return pd.DataFrame(rows)


def params_section(results: Results, study) -> Section:
    section = Section(
        "params",
        "Parameters",
        f"Per variant ({study.sweep.mode} sweep). Components: the library's own count (method: counter); "
        "closed form: `formulas/params.py`; gap = (counter - closed form) / counter.",
    )
    table = params_frame(results, study)
    if table.empty:
        section.missing = "no `params` results: add `params` to the study's measurements and run it"
        return section
    section.tables.append(
        Table(
            "Parameters by component",
            "Parameters per component (counter), the change of the total against the base variant, and the "
            "closed-form total with its gap to the counter.",
            [
                "variant",
                *SHAPE_AXES,
                "total (params)",
                "Δ vs base",
                "embedding",
                "attention",
                "feed-forward",
                "norm",
                "logits",
                "other",
                "closed form total",
                "gap",
            ],
            [
                [
                    r["variant_id"],
                    *(str(r[a]) for a in SHAPE_AXES),
                    Quantity(r["total"], "params"),
                    Quantity(r["delta_vs_base"], "fraction", "signed", 1),
                    *(Quantity(r[c], "params") for c in COLUMNS[1:]),
                    Quantity(r["closed_form_total"], "params"),
                    Quantity(r[CLOSED_FORM_GAP], "fraction", "signed", 3),
                ]
                for r in table.to_dict("records")
            ],
        )
    )
    fig = params_vs_axes(table, [a for a in SHAPE_AXES if a in table.columns])
    section.figures += [f for f in (fig, param_split(table)) if f]
    return section
