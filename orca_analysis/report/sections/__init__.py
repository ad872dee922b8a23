"""Report sections, one module per measurement family: results -> tables and figures (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..figures import Figure


@dataclass
class Table:
    title: str
    caption: str  # says the unit and the method of every column
    columns: list[str]
    rows: list[list[str]]


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


def ok_rows(results: pd.DataFrame, measurement: str) -> pd.DataFrame:
    """This measurement's successful records, with an empty string for a missing category."""
    if results.empty or "measurement" not in results:
        return results
    rows = results[(results["measurement"] == measurement) & (results["status"] == "ok")].copy()
    if "category" in rows:
        rows["category"] = rows["category"].fillna("").astype(str)
    return rows


def with_parts(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with their key=value categories spread into columns (measure/_recorder.py's format)."""
    from ...measure._recorder import parse_category

    parts = pd.DataFrame([parse_category(c) for c in rows["category"]], index=rows.index)
    # the category's keys win over the variant's columns of the same name (a proxy's depth is not the variant's)
    return rows.drop(columns=[c for c in parts.columns if c in rows.columns]).join(parts)


def pick(rows: pd.DataFrame, **where: Any) -> pd.DataFrame:
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows


def value(rows: pd.DataFrame, **where: Any) -> float | None:
    sub = pick(rows, **where)
    return float(sub["value"].iloc[0]) if not sub.empty else None


def variant_order(study) -> list[str]:
    return [v.variant_id for v in study.variants()]


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """3.77e12 -> '3.77 T' + unit."""
    if x is None or pd.isna(x):
        return "n/a"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}g} {prefix}{unit}"
    return f"{x:.{digits}g} {unit}".rstrip()


def mib(x: float | None) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{x / 2**20:,.1f} MiB"


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{x * 100:+.{digits}f}%"


def share(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{x * 100:.{digits}f}%"


def axis_table(study, variant_ids) -> pd.DataFrame:
    """variant_id, dim, depth, heads and `on_axis` (the shape axes a variant lies on, others at base)."""
    rows = []
    for v in study.variants():
        if v.variant_id not in set(variant_ids):
            continue
        changed = [k for k, val in v.swept.items() if val != study.base.get(k)]
        on = {"dim", "depth", "heads"} if not changed else set(changed) if len(changed) == 1 else set()
        rows.append(
            {
                "variant_id": v.variant_id,
                "on_axis": on,
                **{a: v.swept.get(a, study.base.get(a)) for a in ("dim", "depth", "heads")},
            }
        )
    return pd.DataFrame(rows)
