"""Rules over trained models (measurement `training`): losses compared across arms that share seeds.

Every comparison is paired by seed where the arms share seeds (claims/stats.py), is read only past the
initial fall (evidence.initial_fall), and a test with a positive control reports "not testable at
this scale" when the control cannot show its effect beyond delta. A test the run's quality tier does not
power (its records are stored as skipped, with the reason) says so too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..catalog.declared.training import (
    OVERFIT_TRAIN_LOSS,
    OVERFIT_VAL_LOSS,
)
from ..catalog.metrics import lookup
from ..catalog.vocabulary import Scale, Verdict
from ..results.query import Value
from .evidence import (
    PROXY,
    Control,
    Evidence,
    Judgement,
    axis_series,
    by_seed,
    compare,
    initial_fall,
    missing,
    scale_of,
    unpowered,
)
from .rules import register_rule
from .stats import Effect, decide, paired_t


def judgement(
    verdict: str,
    text: str,
    rows: list,
    values: list[Value],
    metric: str,
    effect: Effect | None,
    delta: float,
    control: Control | None = None,
    unit: str = "",
) -> Judgement:
    scale = scale_of(values)
    return Judgement(
        verdict,
        (PROXY if scale == "proxy" else "") + text,
        rows,
        scale=scale,
        metric=metric,
        effect=effect,
        delta=delta,
        unit=unit,
        control=control,
    )


def seed_means(s: Any) -> dict[Any, Value]:
    """Axis value -> its Value (the first where a point has several)."""
    out: dict[Any, Value] = {}
    for v in s.values:
        if v.value is not None and s.axis in v.swept:
            out.setdefault(v.swept[s.axis], v)
    return {k: out[k] for k in sorted(out)}


def no_results(ev: Evidence, metric: str, axis: str | None = None) -> Judgement:
    """No values to compare: not testable when the run skipped them (its tier does not power the test),
    else not tested yet."""
    why = unpowered(ev, metric, ev.on_axis(axis) if axis else None)
    if why:
        return Judgement(Verdict.NOT_TESTABLE, f"{PROXY}{metric}: {why}", scale=Scale.PROXY, metric=metric)
    return missing(metric)


def early_read(
    ev: Evidence, arms: dict[str, Value], rows: list, metric: str, delta: float
) -> Judgement | None:
    why = initial_fall(ev, arms)
    if not why:
        return None
    return judgement(Verdict.NOT_TESTABLE, f"{metric}: {why}", rows, list(arms.values()), metric, None, delta)


@register_rule("decreases_with")
def decreases_with(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Judgement:
    """Loss falls from the axis's first value to its last by more than delta (paired by seed)."""
    s = axis_series(ev, metric, axis)
    if len(s) < 2:
        return no_results(ev, metric, axis)
    pts = seed_means(s)
    first, last = pts[s.keys[0]], pts[s.keys[-1]]
    rows = s.rows(f"{metric} (mean of seeds)")
    late = early_read(ev, {f"{axis}={k}": v for k, v in pts.items()}, rows, metric, delta)
    if late:
        return late
    effect, unit, ys = compare([first, last], [1.0, -1.0]), lookup(metric).unit, s.ys
    rates = ", ".join(f"{axis}={k} {v.get('lr'):g}" for k, v in pts.items() if v.get("lr") is not None)
    span = (
        f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} {ys[0]:.3f} -> {ys[-1]:.3f}; fall {effect.text(unit)}, "
        f"minimal effect of interest {delta:g}" + (f"; learning rates {rates}" if rates else "")
    )
    decided = decide(effect, delta)
    if decided == Verdict.INCONCLUSIVE:  # a null result is never support
        return judgement(
            Verdict.INCONCLUSIVE,
            f"{span}: the interval straddles it, so the data cannot tell",
            rows,
            s.values,
            metric,
            effect,
            delta,
        )
    if decided == Verdict.CONTRADICTED:
        return judgement(
            Verdict.CONTRADICTED, f"{span}: no fall of that size", rows, s.values, metric, effect, delta
        )
    if not np.all(np.diff(ys) < 0):
        return judgement(
            Verdict.QUALIFIED, f"{span}, but not at every step", rows, s.values, metric, effect, delta
        )
    return judgement(Verdict.SUPPORTED, span, rows, s.values, metric, effect, delta)


@register_rule("diminishing_returns")
def diminishing_returns(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Judgement:
    """The first step's gain is real, and the last step gains less: (m0 - m1) - (m_{k-1} - m_k) > delta."""
    s = axis_series(ev, metric, axis)
    if len(s) < 3:
        if len(s):
            return Judgement(Verdict.NOT_TESTED, f"needs 3 or more {axis} values")
        return no_results(ev, metric, axis)
    pts = list(seed_means(s).values())
    unit, rows = lookup(metric).unit, s.rows(f"{metric} (mean of seeds)")
    late = early_read(ev, {f"{axis}={k}": v for k, v in seed_means(s).items()}, rows, metric, delta)
    if late:
        return late
    first = compare([pts[0], pts[1]], [1, -1])
    text = ", ".join(f"{x:+.3f}" for x in -np.diff(s.ys))
    if decide(first, delta) != Verdict.SUPPORTED:  # no gain at all is not a diminishing one
        return judgement(
            Verdict.INCONCLUSIVE,
            f"the first step along {axis} gains {first.text(unit)} (gains {text}): "
            "with no gain shown to shrink, the data cannot tell",
            rows,
            s.values,
            metric,
            first,
            delta,
        )
    shrink = compare([pts[0], pts[1], pts[-2], pts[-1]], [1, -1, -1, 1])
    verdict = decide(shrink, delta, helps=False)
    said = f"gains along {axis}: {text}; first gain minus last {shrink.text(unit)}"
    if verdict == Verdict.SUPPORTED and not np.all(np.diff(-np.diff(s.ys)) < 0):
        verdict, said = Verdict.QUALIFIED, f"{said}, but the gains do not shrink at every step"
    return judgement(verdict, said, rows, s.values, metric, shrink, delta)


@register_rule("ablation_robustness")
def ablation_robustness(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Judgement:
    """The loss rise when a fixed fraction of the heads is silenced falls from the axis's first value to
    its last by more than delta (paired by seed). Positive control: the first arm's own rise (the whole
    effect the comparison could remove) must lie beyond delta; otherwise its heads barely matter at this
    scale, and a fall beyond delta is impossible by construction."""
    s = axis_series(ev, metric, axis)
    if len(s) < 2:
        return no_results(ev, metric, axis)
    pts = seed_means(s)
    first, last = pts[s.keys[0]], pts[s.keys[-1]]
    unit, rows = lookup(metric).unit, s.rows(f"{metric} (mean of seeds)")
    control = Control(
        f"{axis}={s.keys[0]}: loss rise when its heads are silenced",
        paired_t(list(by_seed(first).values()) or [first.value]),
        delta,
        unit,
    )
    effect = compare([first, last], [1.0, -1.0])
    span = (
        f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} {s.ys[0]:.4f} -> {s.ys[-1]:.4f}; fall "
        f"{effect.text(unit, 4)}, minimal effect of interest {delta:g}"
    )
    if not control.shows_power:
        return judgement(
            Verdict.NOT_TESTABLE,
            f"{span}; positive control: {control.text()}: the heads barely matter, "
            "so no fall beyond the minimal effect is possible",
            rows,
            s.values,
            metric,
            effect,
            delta,
            control,
        )
    decided = decide(effect, delta)
    if decided == Verdict.SUPPORTED and not np.all(np.diff(s.ys) < 0):
        decided, span = Verdict.QUALIFIED, f"{span}, but not at every step"
    why = {
        Verdict.INCONCLUSIVE: ": the interval straddles it, so the data cannot tell",
        Verdict.CONTRADICTED: ": no fall of that size",
    }.get(decided, "")
    return judgement(decided, span + why, rows, s.values, metric, effect, delta, control)


def _at_last_step(ev: Evidence, metric: str, variant: str) -> tuple[Value | None, list[Value]]:
    """The variant's value at its last evaluation point, and every point (per step, over seeds)."""
    found = [v for v in ev.results.values(metric, variant=variant)]
    if not found:
        return None, []
    found = sorted(found, key=lambda v: int(v.get("step")))
    return found[-1], found


@register_rule("overfitting")
def overfitting(ev: Evidence, axis: str, delta: float = 0.0) -> Judgement:
    """Trained on a deliberately small subset: the held-out loss at the end of the run, the axis's last
    value against its first (positive: the larger arm generalises worse from little data), paired by
    seed, with the training loss beside it. Positive control: the last arm's held-out loss rises from
    its best evaluation point to its end by more than delta (it is overfitting at all at this budget)."""
    s = axis_series(ev, OVERFIT_VAL_LOSS, axis, last_step=True)
    if len(s) < 2:
        return no_results(ev, OVERFIT_VAL_LOSS, axis)
    pts = seed_means(s)
    first, last = pts[s.keys[0]], pts[s.keys[-1]]
    unit, rows = "nats/token", []
    for k, v in pts.items():
        train, _ = _at_last_step(ev, OVERFIT_TRAIN_LOSS, v.variant_id)
        rows.append(
            {
                "label": f"{axis}={k}: held-out",
                "value": float(v.value),
                "unit": unit,
                "method": f"overfit_val_loss at step {v.get('step')} (mean of seeds)",
            }
        )
        if train is not None:
            rows.append(
                {
                    "label": f"{axis}={k}: training",
                    "value": float(train.value),
                    "unit": unit,
                    "method": f"overfit_train_loss at step {train.get('step')} (mean of seeds)",
                }
            )
    _, curve = _at_last_step(ev, OVERFIT_VAL_LOSS, last.variant_id)
    end = by_seed(curve[-1])
    rise = [end[seed] - min(by_seed(p).get(seed, end[seed]) for p in curve) for seed in end]
    control = Control(
        f"{axis}={s.keys[-1]}: held-out loss rise from its best point to the end", paired_t(rise), delta, unit
    )
    effect = compare([last, first], [1.0, -1.0])
    span = (
        f"{axis} {s.keys[0]} -> {s.keys[-1]}, trained on a small subset: held-out loss {s.ys[0]:.3f} -> "
        f"{s.ys[-1]:.3f}, rise {effect.text(unit)}, minimal effect of interest {delta:g}"
    )
    if not control.shows_power:
        return judgement(
            Verdict.NOT_TESTABLE,
            f"{span}; positive control: {control.text()}: no overfitting to see in this budget",
            rows,
            s.values,
            OVERFIT_VAL_LOSS,
            effect,
            delta,
            control,
        )
    decided = decide(effect, delta, helps=False)
    why = {
        Verdict.INCONCLUSIVE: ": the interval straddles it, so the data cannot tell",
        Verdict.CONTRADICTED: ": the larger arm generalises better from little data",
        Verdict.SUPPORTED: ": the larger arm generalises worse from little data",
    }[decided]
    return judgement(decided, span + why, rows, s.values, OVERFIT_VAL_LOSS, effect, delta, control)
