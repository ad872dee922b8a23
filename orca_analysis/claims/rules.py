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


def one_device(rows: pd.DataFrame, points: str | None = None) -> pd.DataFrame:
    """The rows of one device, so that CPU proxies and GPU full-scale runs never meet in one
    comparison: the device covering the most distinct `points` (e.g. the axis), a GPU on ties."""
    if rows.empty or "device" not in rows or rows["device"].nunique() <= 1:
        return rows
    device = rows["device"].astype(str)

    def rank(d: str) -> tuple[int, bool]:
        return (rows.loc[device == d, points].nunique() if points else 0, d.startswith("cuda"))

    return rows[device == max(device.unique(), key=rank)]


def axis_series(
    ev: Evidence,
    measurement: str,
    metric: str,
    axis: str,
    method: str | None = None,
    seq_len: int | None = None,
    category: str | None = None,
    category_has: str | None = None,
    last_step: bool = False,
) -> pd.Series:
    """Metric value per value of `axis`, over the base and the variants that change only `axis`.

    `category` keeps one exact category ("" = whole-model values); `category_has` keeps categories
    containing a text (e.g. "seed=mean"); `last_step` keeps each variant's latest `step=` value.
    """
    r = ev.results
    if r.empty or not {"measurement", "metric", "status", "value", "variant_id"} <= set(r.columns):
        return pd.Series(dtype=float)
    rows = r[(r["measurement"] == measurement) & (r["metric"] == metric) & (r["status"] == "ok")]
    if method:
        rows = rows[rows["method"] == method]
    if rows.empty or axis not in rows.columns:
        return pd.Series(dtype=float)
    cats = rows["category"].fillna("").astype(str) if "category" in rows else pd.Series("", index=rows.index)
    if category is not None:
        rows, cats = rows[cats == category], cats[cats == category]
    if category_has is not None:
        keep = cats.str.contains(category_has, regex=False)
        rows, cats = rows[keep], cats[keep]
    if last_step and not rows.empty:
        steps = cats.str.extract(r"step=(\d+)")[0].astype(float)
        rows = rows[steps == steps.groupby(rows["variant_id"]).transform("max")]
    if "seq_len" in rows and rows["seq_len"].notna().any():
        target = seq_len if seq_len is not None else rows["seq_len"].max()
        rows = rows[rows["seq_len"] == target]
    on_axis = {
        v.variant_id
        for v in ev.study.variants()
        if all(val == ev.study.base.get(k) for k, val in v.swept.items() if k != axis)
    }
    rows = one_device(rows[rows["variant_id"].isin(on_axis)], axis)
    return rows.groupby(axis)["value"].median().sort_index()


def seed_spread(ev: Evidence, measurement: str, metric: str, axis: str) -> float:
    """The largest spread over seeds among the points of an axis (0 when not recorded)."""
    s = axis_series(ev, measurement, metric, axis, method="aggregate", category_has="seed=spread")
    return float(s.max()) if not s.empty else 0.0


def _exponent(s: pd.Series) -> float:
    return float(np.polyfit(np.log(s.index.astype(float)), np.log(s.to_numpy(dtype=float)), 1)[0])


def _unit(ev: Evidence, measurement: str, metric: str) -> str:
    r = ev.results
    if "unit" not in r:
        return ""
    units = r[(r["measurement"] == measurement) & (r["metric"] == metric)]["unit"].dropna()
    return str(units.iloc[0]) if not units.empty else ""


def _evidence_rows(s: pd.Series, axis: str, label: str, unit: str = "") -> list[dict[str, Any]]:
    return [{"label": f"{axis}={k}", "value": float(v), "unit": unit, "method": label} for k, v in s.items()]


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
    **filters: Any,
) -> Verdict:
    s = axis_series(ev, measurement, metric, axis, method, seq_len, **filters)
    if len(s) < 2:
        return _missing(measurement)
    k, ratio = _exponent(s), s.iloc[-1] / s.iloc[0]
    label = f"{measurement}/{metric}" + (f" ({method})" if method else "")
    rows = _evidence_rows(s, axis, label, _unit(ev, measurement, metric))
    span = f"{axis} {s.index[0]} -> {s.index[-1]}: {metric} x{ratio:.2f} (~{axis}^{k:.2f})"
    if not np.all(np.diff(s.to_numpy()) > 0):
        return Verdict("contradicted", f"{metric} does not rise steadily with {axis}; {span}", rows)
    differ = ev.fidelity.get(qualify_with_fidelity or "", {}).get("notes_differ", "")
    if differ:
        return Verdict("qualified", f"{span}; but only because {differ}", rows)
    return Verdict("supported", span, rows)


def _quality_series(ev: Evidence, measurement: str, metric: str, axis: str) -> tuple[pd.Series, float]:
    """Seed-mean losses along an axis and the largest seed spread (the noise floor)."""
    s = axis_series(ev, measurement, metric, axis, method="aggregate", category_has="seed=mean")
    return s, seed_spread(ev, measurement, metric, axis)


@register_rule("decreases_with")
def decreases_with(ev: Evidence, measurement: str, metric: str, axis: str) -> Verdict:
    """Loss falls as the axis grows, by more than the spread between seeds."""
    s, noise = _quality_series(ev, measurement, metric, axis)
    if len(s) < 2:
        return _missing(measurement)
    rows = _evidence_rows(s, axis, f"{measurement}/{metric} (mean of seeds)", _unit(ev, measurement, metric))
    span = (
        f"{axis} {s.index[0]} -> {s.index[-1]}: {metric} {s.iloc[0]:.3f} -> {s.iloc[-1]:.3f} "
        f"(seed spread up to {noise:.3f})"
    )
    change = s.iloc[-1] - s.iloc[0]
    if abs(change) <= noise:
        return Verdict(
            "qualified", f"{span}: no difference beyond the seed spread at this (proxy) scale", rows
        )
    if change > 0:
        return Verdict("contradicted", f"{span}: {metric} rises instead", rows)
    if np.all(np.diff(s.to_numpy()) < 0):
        return Verdict("supported", span, rows)
    return Verdict("qualified", f"{span}, but not at every step", rows)


@register_rule("diminishing_returns")
def diminishing_returns(ev: Evidence, measurement: str, metric: str, axis: str) -> Verdict:
    s, noise = _quality_series(ev, measurement, metric, axis)
    if len(s) < 3:
        return (
            _missing(measurement) if s.empty else Verdict("not tested yet", f"needs 3 or more {axis} values")
        )
    gains = -np.diff(s.to_numpy())  # loss reduction per step along the axis
    rows = _evidence_rows(s, axis, f"{measurement}/{metric} (mean of seeds)", _unit(ev, measurement, metric))
    text = ", ".join(f"{g:+.3f}" for g in gains)
    if np.all(np.abs(gains) <= noise):
        return Verdict(
            "supported",
            f"no step along {axis} changes {metric} beyond the seed spread "
            f"({noise:.3f}): {text}; more heads buy nothing measurable here",
            rows,
        )
    if np.all(np.diff(gains) < 0):
        return Verdict("supported", f"each step along {axis} improves {metric} less: {text}", rows)
    return Verdict("contradicted", f"gains along {axis} do not shrink: {text}", rows)


def _parts(ev: Evidence, measurement: str, metric: str, variant: str = "base") -> pd.DataFrame:
    """Records of one metric with their key=value categories spread into columns."""
    r = ev.results
    if r.empty or "measurement" not in r:
        return pd.DataFrame()
    rows = r[
        (r["measurement"] == measurement)
        & (r["metric"] == metric)
        & (r["variant_id"] == variant)
        & (r["status"] == "ok")
    ]
    rows = one_device(rows)  # the GPU's full-scale runs where there are any
    if rows.empty:
        return pd.DataFrame()
    cats = rows["category"].fillna("").astype(str)
    parts = pd.DataFrame(
        [dict(p.split("=", 1) for p in c.split(",") if "=" in p) for c in cats], index=rows.index
    )
    return parts.join(rows[["value"]])


@register_rule("gradient_health")
def gradient_health(ev: Evidence, remedy: str = "deepnorm", broken: str = "post_norm") -> Verdict:
    """At the largest depth tested, do plain post-norm gradients vanish or explode while the remedy's do not?"""
    p = _parts(ev, "training", "grad_norm_first_over_last")
    if p.empty:
        return _missing("training")
    p["depth"], p["step"] = p["depth"].astype(int), p["step"].astype(int)
    deep = p[(p["depth"] == p["depth"].max()) & (p["step"] == p["step"].max())]
    ratio = dict(zip(deep["norm"], deep["value"], strict=True))
    rows = [
        {"label": f"{k}, depth {p['depth'].max()}", "value": float(v), "method": "first/last block grad norm"}
        for k, v in sorted(ratio.items())
    ]
    if broken not in ratio or remedy not in ratio:
        return Verdict("not tested yet", f"needs {broken} and {remedy} runs", rows)

    def sick(v: float) -> bool:
        return v < 1e-2 or v > 1e2

    text = ", ".join(f"{k} {v:.2g}" for k, v in sorted(ratio.items()))
    if sick(ratio[broken]) and not sick(ratio[remedy]):
        return Verdict(
            "supported",
            f"at depth {p['depth'].max()} plain {broken} gradients reach the first block "
            f"{ratio[broken]:.2g}x as strong as the last (vanishing); {remedy} keeps "
            f"{ratio[remedy]:.2g}x ({text})",
            rows,
        )
    if not sick(ratio[broken]):
        return Verdict(
            "qualified",
            f"no vanishing or exploding gradients up to depth {p['depth'].max()} at proxy scale ({text})",
            rows,
        )
    if abs(np.log10(ratio[remedy])) < abs(np.log10(ratio[broken])) / 2:
        return Verdict(
            "qualified",
            f"at depth {p['depth'].max()} plain {broken} gradients vanish "
            f"({ratio[broken]:.2g}); {remedy} narrows the gap to {ratio[remedy]:.2g} but does not "
            f"close it in this short proxy run ({text})",
            rows,
        )
    return Verdict("contradicted", f"{remedy} does not keep gradients healthy either ({text})", rows)


@register_rule("kernel_ran")
def kernel_ran(ev: Evidence, expected: str = "flash") -> Verdict:
    """Which SDPA backend the profiler saw in a training step, per device."""
    r = ev.results
    if r.empty or "measurement" not in r:
        return _missing("kernels")
    ran = r[(r["measurement"] == "kernels") & (r["metric"] == "ran_train") & (r["status"] == "ok")]
    if ran.empty:
        return _missing("kernels")
    by_device = ran.groupby("device")["category"].agg(lambda c: sorted(set(c)))
    rows = [
        {"label": f"ran on {d}", "value": ", ".join(b), "method": "profiler"} for d, b in by_device.items()
    ]
    gpu = {d: b for d, b in by_device.items() if str(d).startswith("cuda")}
    if gpu:
        if all(b == [expected] for b in gpu.values()):
            return Verdict("supported", f"the {expected} kernel ran on the GPU for every variant", rows)
        return Verdict(
            "contradicted",
            "on the GPU another kernel ran: " + "; ".join(f"{d}: {', '.join(b)}" for d, b in gpu.items()),
            rows,
        )
    differ = ev.fidelity.get("attn_flash", {}).get("notes_differ", "")
    cpu = "; ".join(f"{d}: {', '.join(b)}" for d, b in by_device.items())
    return Verdict(
        "qualified",
        f"on CPU the {expected} kernel ran ({cpu}); no GPU results yet"
        + (f", and there {differ}" if differ else ""),
        rows,
    )


@register_rule("extrapolation")
def extrapolation(ev: Evidence, scheme: str = "alibi", reference: str = "none") -> Verdict:
    """Loss at the longest evaluated length versus the training length, for a scheme and the reference."""
    p = _parts(ev, "training", "extrapolation_val_loss")
    if p.empty or "seed" not in p:
        return _missing("training")
    p = p[p["seed"] == "mean"]
    p["eval_len"] = p["eval_len"].astype(int)
    rows, growth = [], {}
    for pos, sub in p.groupby("pos"):
        sub = sub.sort_values("eval_len")
        growth[pos] = sub["value"].iloc[-1] - sub["value"].iloc[0]
        rows.append(
            {
                "label": f"{pos}: {sub['eval_len'].iloc[0]} -> {sub['eval_len'].iloc[-1]}",
                "value": float(growth[pos]),
                "method": "val loss change (mean of seeds)",
            }
        )
    if scheme not in growth or reference not in growth:
        return Verdict("not tested yet", f"needs '{scheme}' and '{reference}' runs", rows)
    noise = seed_spread_extrapolation(ev)
    text = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(growth.items()))
    if abs(growth[reference]) <= noise and abs(growth[scheme]) <= noise:
        return Verdict(
            "qualified",
            f"no scheme degrades at longer lengths at proxy scale, so the test cannot tell "
            f"them apart (loss change from the training length: {text}; seed spread {noise:.3f})",
            rows,
        )
    if growth[scheme] < growth[reference] - noise:
        return Verdict(
            "supported", f"{scheme} degrades less than {reference} beyond the training length: {text}", rows
        )
    return Verdict("contradicted", f"{scheme} does not extrapolate better than {reference}: {text}", rows)


def seed_spread_extrapolation(ev: Evidence) -> float:
    p = _parts(ev, "training", "extrapolation_val_loss")
    return float(p[p["seed"] == "spread"]["value"].max()) if not p.empty and "seed" in p else 0.0


def decode_speedup(ev: Evidence) -> tuple[float, float, str] | None:
    """Multi-query over multi-head cached-decode speed of the base at the longest length measured,
    on a GPU where one was measured: (speed-up, timing noise, where). The noise is the sum of both
    timings' relative IQRs, or the drift of a step timed twice (`train_step_repeat_diff`) if larger."""
    r = ev.results
    if r.empty or not {"measurement", "device", "seq_len"} <= set(r.columns):
        return None
    rows = r[
        (r["measurement"] == "speed") & (r["metric"] == "kv_ablation_decode_time") & (r["status"] == "ok")
    ]
    rows = rows[rows["variant_id"] == "base"]
    gpu = rows[rows["device"].astype(str).str.startswith("cuda")]
    rows = gpu if not gpu.empty else rows
    if rows.empty:
        return None
    rows = rows[rows["seq_len"] == rows["seq_len"].max()]
    rows = rows.assign(attn=rows["category"].astype(str).str.extract(r"attn=(\w+)")[0])
    median = rows[rows["method"] == "measured_median"].groupby("attn")["value"].median()
    iqr = rows[rows["method"] == "measured_iqr"].groupby("attn")["value"].median()
    if not {"mqa", "mha"} <= set(median.index) or not {"mqa", "mha"} <= set(iqr.index):
        return None
    noise = iqr["mqa"] / median["mqa"] + iqr["mha"] / median["mha"]
    # the same step timed twice drifts more than one timing's spread on a shared CPU: the larger counts
    device = rows["device"].iloc[0]
    drift = r[(r["metric"] == "train_step_repeat_diff") & (r["status"] == "ok") & (r["device"] == device)]
    noise = max(noise, float(drift["value"].max()) if not drift.empty else 0.0)
    where = f"{device}, seq_len {int(rows['seq_len'].iloc[0])}"
    return float(median["mha"] / median["mqa"]), float(noise), where


@register_rule("mqa_tradeoff")
def mqa_tradeoff(ev: Evidence) -> Verdict:
    """One KV head: KV-cache bytes saved and decode speed gained, against the validation-loss cost."""
    loss = _parts(ev, "training", "attn_kv_val_loss")
    cache = _parts(ev, "training", "kv_cache_bytes")
    if loss.empty or cache.empty:
        return _missing("training")
    mean = loss[loss["seed"] == "mean"].set_index("attn")["value"]
    spread = float(loss[loss["seed"] == "spread"]["value"].max())
    full = cache[cache["scale"] == "full"].set_index("attn")["value"]
    if not {"mha", "mqa"} <= set(mean.index) or not {"mha", "mqa"} <= set(full.index):
        return Verdict("not tested yet", "needs multi-head and multi-query runs")
    cost, saving = mean["mqa"] - mean["mha"], full["mha"] / full["mqa"]
    rows = [
        {"label": f"val loss {k}", "value": float(v), "method": "training (mean of seeds)"}
        for k, v in mean.items()
    ]
    rows += [
        {"label": f"KV cache {k}", "value": float(v), "method": "closed form, full scale"}
        for k, v in full.items()
    ]
    text = f"KV cache {saving:.0f}x smaller; validation loss {cost:+.3f} (seed spread {spread:.3f})"
    if cost > spread:
        return Verdict("qualified", text + ": the smaller cache costs measurable quality", rows)
    speed = decode_speedup(ev)
    if speed is None:
        return Verdict("qualified", text + "; decode speed with one KV head not measured yet (speed)", rows)
    speedup, noise, where = speed
    rows.append({"label": "decode speed-up, one KV head", "value": speedup, "method": f"speed ({where})"})
    text += f"; cached decoding x{speedup:.2f} as fast ({where}, timing noise {noise:.0%})"
    if speedup > 1 + noise:
        return Verdict("supported", text, rows)
    return Verdict("qualified", text + ": no faster decoding beyond the timing noise here", rows)


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
