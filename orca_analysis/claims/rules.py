"""Verdict rules: small registered functions from stored results to a verdict.

A rule gets the evidence (results table, study, fidelity entries) and its parameters from the
catalogue, and returns a Verdict. Missing results give `not tested yet`, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..study.schema import Study

VERDICTS = ("supported", "qualified", "contradicted", "not tested yet")


@dataclass
class Verdict:
    verdict: str
    reason: str  # one or two sentences with the numbers behind the verdict
    evidence: list[dict[str, Any]] = field(default_factory=list)  # rows: {label, value, method}
    anchor: str = ""  # where in the report the evidence lives


@dataclass
class Evidence:
    results: pd.DataFrame
    study: Study
    fidelity: dict[str, dict[str, Any]]  # flag -> fidelity entry of the base


RuleFn = Callable[..., Verdict]
RULES: dict[str, RuleFn] = {}


def register_rule(name: str) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn

    return wrap


def axis_series(
    ev: Evidence,
    measurement: str,
    metric: str,
    axis: str,
    method: str | None = None,
    seq_len: int | None = None,
) -> pd.Series:
    """Metric value per value of `axis`, over the base and the variants that change only `axis`."""
    r = ev.results
    if r.empty or not {"measurement", "metric", "status", "value", "variant_id"} <= set(r.columns):
        return pd.Series(dtype=float)
    rows = r[(r["measurement"] == measurement) & (r["metric"] == metric) & (r["status"] == "ok")]
    if method:
        rows = rows[rows["method"] == method]
    if rows.empty or axis not in rows.columns:
        return pd.Series(dtype=float)
    if "seq_len" in rows and rows["seq_len"].notna().any():
        target = seq_len if seq_len is not None else rows["seq_len"].max()
        rows = rows[rows["seq_len"] == target]
    if "category" in rows:  # whole-model values only
        rows = rows[rows["category"].isna() | (rows["category"] == "")]
    on_axis = {
        v.variant_id
        for v in ev.study.variants()
        if all(val == ev.study.base.get(k) for k, val in v.swept.items() if k != axis)
    }
    rows = rows[rows["variant_id"].isin(on_axis)]
    return rows.groupby(axis)["value"].median().sort_index()


def _exponent(s: pd.Series) -> float:
    return float(np.polyfit(np.log(s.index.astype(float)), np.log(s.to_numpy(dtype=float)), 1)[0])


def _evidence_rows(s: pd.Series, axis: str, label: str) -> list[dict[str, Any]]:
    return [{"label": f"{axis}={k}", "value": float(v), "method": label} for k, v in s.items()]


def _missing(measurement: str) -> Verdict:
    return Verdict("not tested yet", f"no `{measurement}` results for this axis in the store")


@register_rule("grows_with")
def grows_with(
    ev: Evidence,
    measurement: str,
    metric: str,
    axis: str,
    method: str | None = None,
    seq_len: int | None = None,
    qualify_with_fidelity: str | None = None,
) -> Verdict:
    s = axis_series(ev, measurement, metric, axis, method, seq_len)
    if len(s) < 2:
        return _missing(measurement)
    k, ratio = _exponent(s), s.iloc[-1] / s.iloc[0]
    rows = _evidence_rows(s, axis, f"{measurement}/{metric}" + (f" ({method})" if method else ""))
    span = f"{axis} {s.index[0]} -> {s.index[-1]}: {metric} x{ratio:.2f} (~{axis}^{k:.2f})"
    if not np.all(np.diff(s.to_numpy()) > 0):
        return Verdict("contradicted", f"{metric} does not rise steadily with {axis}; {span}", rows)
    differ = ev.fidelity.get(qualify_with_fidelity or "", {}).get("notes_differ", "")
    if differ:
        return Verdict("qualified", f"{span}; but only because {differ}", rows)
    return Verdict("supported", span, rows)


@register_rule("decreases_with")
def decreases_with(
    ev: Evidence, measurement: str, metric: str, axis: str, method: str | None = None
) -> Verdict:
    s = axis_series(ev, measurement, metric, axis, method)
    if len(s) < 2:
        return _missing(measurement)
    rows = _evidence_rows(s, axis, f"{measurement}/{metric}")
    span = f"{axis} {s.index[0]} -> {s.index[-1]}: {metric} {s.iloc[0]:.3f} -> {s.iloc[-1]:.3f}"
    steps = np.diff(s.to_numpy())
    if np.all(steps < 0):
        return Verdict("supported", span, rows)
    if s.iloc[-1] < s.iloc[0]:
        return Verdict("qualified", f"{span}, but not at every step", rows)
    return Verdict("contradicted", span, rows)


@register_rule("diminishing_returns")
def diminishing_returns(ev: Evidence, measurement: str, metric: str, axis: str) -> Verdict:
    s = axis_series(ev, measurement, metric, axis)
    if len(s) < 3:
        return (
            _missing(measurement) if s.empty else Verdict("not tested yet", f"needs 3 or more {axis} values")
        )
    gains = -np.diff(s.to_numpy())  # loss reduction per step along the axis
    rows = _evidence_rows(s, axis, f"{measurement}/{metric}")
    text = ", ".join(f"{g:+.3f}" for g in gains)
    if np.all(np.diff(gains) < 0):
        return Verdict("supported", f"each step along {axis} improves {metric} less: {text}", rows)
    return Verdict("contradicted", f"gains along {axis} do not shrink: {text}", rows)


@register_rule("fidelity")
def fidelity(ev: Evidence, flag: str, differs_means: str = "qualified") -> Verdict:
    entry = ev.fidelity.get(flag)
    if entry is None:
        return Verdict("not tested yet", f"the base model does not set '{flag}'")
    rows = [{"label": flag, "value": entry["value"], "method": f"fidelity: {entry['status']}"}]
    if entry["status"] == "unsupported":
        return Verdict("contradicted", f"refused: {entry['how']}", rows, "fidelity")
    if entry["notes_differ"]:
        return Verdict(
            differs_means, f"{entry['notes_differ']}. What the code does: {entry['how']}", rows, "fidelity"
        )
    if entry["status"] == "realised":
        return Verdict(
            "qualified",
            f"x-transformers lacks it; orca-analysis realises it: {entry['how']}",
            rows,
            "fidelity",
        )
    return Verdict("supported", entry["how"], rows, "fidelity")


@register_rule("not_yet")
def not_yet(ev: Evidence) -> Verdict:
    return Verdict("not tested yet", "no rule over stored results exists for this claim yet")
