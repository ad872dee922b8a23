"""What a measurement's report section is: tables of cells (text or Quantity) and figures.

Each measurement builds its own section (measurements/<name>/section.py) from the query
(results/query.py); the report lists the sections in the registry's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .figures import Figure
from .format import Quantity

Cell = str | Quantity


@dataclass
class Table:
    title: str
    caption: str  # says the unit and the method of every column
    columns: list[str]
    rows: list[list[Cell]]


@dataclass
class Section:
    id: str
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: str = ""  # what is not measured yet, and how to get it

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "intro": self.intro,
            "missing": self.missing,
            "tables": [t.__dict__ for t in self.tables],
            "figures": self.figures,
        }


def variant_order(study) -> list[str]:
    return [v.variant_id for v in study.variants()]


SHAPE_AXES = ("dim", "depth", "heads")


def axes_of(study) -> dict[str, set[str]]:
    """variant_id -> the shape axes it lies on: only that axis differs from the base (the base lies on all)."""
    out = {}
    for v in study.variants():
        changed = [k for k, val in v.swept.items() if val != study.base.get(k)]
        out[v.variant_id] = set(SHAPE_AXES) if not changed else set(changed) if len(changed) == 1 else set()
    return out


def axis_panels(study) -> dict[str, list[str]]:
    """Small multiples of a sweep: one panel per shape axis, its variants in order with the base among
    them; variants on no single axis get a panel of their own."""
    on, panels = axes_of(study), {}
    swept = list(dict.fromkeys(a for v in study.variants() for a in v.swept))
    for axis in [*SHAPE_AXES, *(a for a in swept if a not in SHAPE_AXES)]:
        members = [v.variant_id for v in study.variants() if axis in on[v.variant_id]]
        if len(members) > 1:
            panels[axis] = sorted(members, key=lambda vid: _axis_value(study, vid, axis))
    rest = [vid for vid, axes in on.items() if not axes]
    if rest:
        panels["other"] = rest
    return panels if len(panels) > 1 else {}


def _axis_value(study, vid: str, axis: str) -> Any:
    v = next(x for x in study.variants() if x.variant_id == vid)
    return v.swept.get(axis, study.base.get(axis))


def shape_of(study) -> dict[str, dict[str, Any]]:
    """variant_id -> its dim, depth and heads."""
    return {
        v.variant_id: {a: v.swept.get(a, study.base.get(a)) for a in SHAPE_AXES} for v in study.variants()
    }
