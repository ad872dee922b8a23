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
    ATTN_KV_VAL_LOSS,
    EXTRAPOLATION_VAL_LOSS,
    GRAD_NORM_FIRST_OVER_LAST,
    KV_CACHE_BYTES,
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
    base_values,
    by_seed,
    compare,
    initial_fall,
    missing,
    scale_of,
    unpowered,
)
from .rules import decode_speedup, generate_saving, register_rule
from .stats import Effect, decide, paired, paired_t


def _stated(verdict: str, text: str, rows: list, values: list[Value], metric: str, effect: Effect | None,
            delta: float, control: Control | None = None, unit: str = "") -> Judgement:  # fmt: skip
    scale = scale_of(values)
    return Judgement(verdict, (PROXY if scale == "proxy" else "") + text, rows, scale=scale, metric=metric,
                   effect=effect, delta=delta, unit=unit, control=control)  # fmt: skip


def _points(s: Any) -> dict[Any, Value]:
    """Axis value -> its Value (the first where a point has several)."""
    out: dict[Any, Value] = {}
    for v in s.values:
        if v.value is not None and s.axis in v.swept:
            out.setdefault(v.swept[s.axis], v)
    return {k: out[k] for k in sorted(out)}


def _absent(ev: Evidence, metric: str, axis: str | None = None) -> Judgement:
    """No values to compare: not testable when the run skipped them (its tier does not power the test),
    else not tested yet."""
    why = unpowered(ev, metric, ev.on_axis(axis) if axis else None)
    if why:
        return Judgement(Verdict.NOT_TESTABLE, f"{PROXY}{metric}: {why}", scale=Scale.PROXY, metric=metric)
    return missing(metric)


def _late(ev: Evidence, arms: dict[str, Value], rows: list, metric: str, delta: float) -> Judgement | None:
    why = initial_fall(ev, arms)
    if not why:
        return None
    return _stated(Verdict.NOT_TESTABLE, f"{metric}: {why}", rows, list(arms.values()), metric, None, delta)


@register_rule("decreases_with")
def decreases_with(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Judgement:
    """Loss falls from the axis's first value to its last by more than delta (paired by seed)."""
    s = axis_series(ev, metric, axis)
    if len(s) < 2:
        return _absent(ev, metric, axis)
    pts = _points(s)
    first, last = pts[s.keys[0]], pts[s.keys[-1]]
    rows = s.rows(f"{metric} (mean of seeds)")
    late = _late(ev, {f"{axis}={k}": v for k, v in pts.items()}, rows, metric, delta)
    if late:
        return late
    effect, unit, ys = compare([first, last], [1.0, -1.0]), lookup(metric).unit, s.ys
    rates = ", ".join(f"{axis}={k} {v.get('lr'):g}" for k, v in pts.items() if v.get("lr") is not None)
    span = (f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} {ys[0]:.3f} -> {ys[-1]:.3f}; fall {effect.text(unit)}, "
            f"minimal effect of interest {delta:g}" + (f"; learning rates {rates}" if rates else ""))  # fmt: skip
    decided = decide(effect, delta)
    if decided == Verdict.INCONCLUSIVE:  # a null result is never support
        return _stated(Verdict.INCONCLUSIVE, f"{span}: the interval straddles it, so the data cannot tell", rows,
                       s.values, metric, effect, delta)  # fmt: skip
    if decided == Verdict.CONTRADICTED:
        return _stated(
            Verdict.CONTRADICTED, f"{span}: no fall of that size", rows, s.values, metric, effect, delta
        )
    if not np.all(np.diff(ys) < 0):
        return _stated(
            Verdict.QUALIFIED, f"{span}, but not at every step", rows, s.values, metric, effect, delta
        )
    return _stated(Verdict.SUPPORTED, span, rows, s.values, metric, effect, delta)


@register_rule("diminishing_returns")
def diminishing_returns(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Judgement:
    """The first step's gain is real, and the last step gains less: (m0 - m1) - (m_{k-1} - m_k) > delta."""
    s = axis_series(ev, metric, axis)
    if len(s) < 3:
        if len(s):
            return Judgement(Verdict.NOT_TESTED, f"needs 3 or more {axis} values")
        return _absent(ev, metric, axis)
    pts = list(_points(s).values())
    unit, rows = lookup(metric).unit, s.rows(f"{metric} (mean of seeds)")
    late = _late(ev, {f"{axis}={k}": v for k, v in _points(s).items()}, rows, metric, delta)
    if late:
        return late
    first = compare([pts[0], pts[1]], [1, -1])
    text = ", ".join(f"{x:+.3f}" for x in -np.diff(s.ys))
    if decide(first, delta) != Verdict.SUPPORTED:  # no gain at all is not a diminishing one
        return _stated(Verdict.INCONCLUSIVE, f"the first step along {axis} gains {first.text(unit)} (gains {text}): "
                       "with no gain shown to shrink, the data cannot tell", rows, s.values, metric, first,
                       delta)  # fmt: skip
    shrink = compare([pts[0], pts[1], pts[-2], pts[-1]], [1, -1, -1, 1])
    verdict = decide(shrink, delta, helps=False)
    said = f"gains along {axis}: {text}; first gain minus last {shrink.text(unit)}"
    if verdict == Verdict.SUPPORTED and not np.all(np.diff(-np.diff(s.ys)) < 0):
        verdict, said = Verdict.QUALIFIED, f"{said}, but the gains do not shrink at every step"
    return _stated(verdict, said, rows, s.values, metric, shrink, delta)


@register_rule("ablation_robustness")
def ablation_robustness(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Judgement:
    """The loss rise when a fixed fraction of the heads is silenced falls from the axis's first value to
    its last by more than delta (paired by seed). Positive control: the first arm's own rise (the whole
    effect the comparison could remove) must lie beyond delta; otherwise its heads barely matter at this
    scale, and a fall beyond delta is impossible by construction."""
    s = axis_series(ev, metric, axis)
    if len(s) < 2:
        return _absent(ev, metric, axis)
    pts = _points(s)
    first, last = pts[s.keys[0]], pts[s.keys[-1]]
    unit, rows = lookup(metric).unit, s.rows(f"{metric} (mean of seeds)")
    control = Control(f"{axis}={s.keys[0]}: loss rise when its heads are silenced",
                      paired_t(list(by_seed(first).values()) or [first.value]), delta, unit)  # fmt: skip
    effect = compare([first, last], [1.0, -1.0])
    span = (f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} {s.ys[0]:.4f} -> {s.ys[-1]:.4f}; fall "
            f"{effect.text(unit, 4)}, minimal effect of interest {delta:g}")  # fmt: skip
    if not control.shows_power:
        return _stated(Verdict.NOT_TESTABLE, f"{span}; positive control: {control.text()}: the heads barely matter, "
                       "so no fall beyond the minimal effect is possible", rows, s.values, metric, effect, delta,
                       control)  # fmt: skip
    decided = decide(effect, delta)
    if decided == Verdict.SUPPORTED and not np.all(np.diff(s.ys) < 0):
        decided, span = Verdict.QUALIFIED, f"{span}, but not at every step"
    why = {Verdict.INCONCLUSIVE: ": the interval straddles it, so the data cannot tell", Verdict.CONTRADICTED: ": no fall "
           "of that size"}.get(decided, "")  # fmt: skip
    return _stated(decided, span + why, rows, s.values, metric, effect, delta, control)


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
        return _absent(ev, OVERFIT_VAL_LOSS, axis)
    pts = _points(s)
    first, last = pts[s.keys[0]], pts[s.keys[-1]]
    unit, rows = "nats/token", []
    for k, v in pts.items():
        train, _ = _at_last_step(ev, OVERFIT_TRAIN_LOSS, v.variant_id)
        rows.append({"label": f"{axis}={k}: held-out", "value": float(v.value), "unit": unit,
                     "method": f"overfit_val_loss at step {v.get('step')} (mean of seeds)"})  # fmt: skip
        if train is not None:
            rows.append({"label": f"{axis}={k}: training", "value": float(train.value), "unit": unit,
                         "method": f"overfit_train_loss at step {train.get('step')} (mean of seeds)"})  # fmt: skip
    _, curve = _at_last_step(ev, OVERFIT_VAL_LOSS, last.variant_id)
    end = by_seed(curve[-1])
    rise = [end[seed] - min(by_seed(p).get(seed, end[seed]) for p in curve) for seed in end]
    control = Control(f"{axis}={s.keys[-1]}: held-out loss rise from its best point to the end",
                      paired_t(rise), delta, unit)  # fmt: skip
    effect = compare([last, first], [1.0, -1.0])
    span = (f"{axis} {s.keys[0]} -> {s.keys[-1]}, trained on a small subset: held-out loss {s.ys[0]:.3f} -> "
            f"{s.ys[-1]:.3f}, rise {effect.text(unit)}, minimal effect of interest {delta:g}")  # fmt: skip
    if not control.shows_power:
        return _stated(Verdict.NOT_TESTABLE, f"{span}; positive control: {control.text()}: no overfitting to see in "
                       "this budget", rows, s.values, OVERFIT_VAL_LOSS, effect, delta, control)  # fmt: skip
    decided = decide(effect, delta, helps=False)
    why = {Verdict.INCONCLUSIVE: ": the interval straddles it, so the data cannot tell",
           Verdict.CONTRADICTED: ": the larger arm generalises better from little data",
           Verdict.SUPPORTED: ": the larger arm generalises worse from little data"}[decided]  # fmt: skip
    return _stated(decided, span + why, rows, s.values, OVERFIT_VAL_LOSS, effect, delta, control)


@register_rule("gradient_health")
def gradient_health(
    ev: Evidence, remedy: str = "deepnorm", broken: str = "post_norm", delta: float = 1.0
) -> Judgement:
    """At the largest depth tested, per seed: the imbalance |log10(first-block / last-block gradient
    norm)| of the plain layout minus the remedy's, in decades (paired by seed). Positive control: the
    plain layout's own imbalance (the most a remedy could remove) must lie beyond delta; otherwise there is
    nothing to remedy at this depth and the test is not testable at this scale. A remedy whose own
    imbalance stays beyond SICK decades narrows the gap without closing it (qualified)."""
    found = base_values(ev, GRAD_NORM_FIRST_OVER_LAST)
    if not found:
        return _absent(ev, GRAD_NORM_FIRST_OVER_LAST)
    depth = max(int(v.get("depth")) for v in found)
    step = max(int(v.get("step")) for v in found)
    logs: dict[str, dict[Any, float]] = {}
    for v in found:
        if int(v.get("depth")) == depth and int(v.get("step")) == step and v.value > 0:
            logs.setdefault(v.get("norm"), {})[v.get("seed")] = abs(float(np.log10(v.value)))
    rows = [{"label": f"{k}, depth {depth}", "value": float(np.mean(list(x.values()))), "unit": "decades",
             "method": f"|log10 first/last block grad norm|, mean of {len(x)} seeds"}
            for k, x in sorted(logs.items())]  # fmt: skip
    if broken not in logs or remedy not in logs:
        return Judgement(Verdict.NOT_TESTED, f"needs {broken} and {remedy} runs", rows)
    effect = paired([logs[broken], logs[remedy]], [1, -1])  # > 0: the remedy is the more balanced
    control = Control(f"plain {broken}'s imbalance at depth {depth}", paired_t(list(logs[broken].values())),
                      delta, "decades")  # fmt: skip
    b, r = float(np.mean(list(logs[broken].values()))), float(np.mean(list(logs[remedy].values())))
    text = (f"at depth {depth}, gradients at the first block are {b:.1f} decades off the last's with plain "
            f"{broken} and {r:.1f} with {remedy}; imbalance removed {effect.text('decades')}, minimal effect of "
            f"interest {delta:g}")  # fmt: skip

    def said(verdict: str, more: str) -> Judgement:
        return _stated(verdict, text + more, rows, found, GRAD_NORM_FIRST_OVER_LAST, effect, delta, control,
                       "decades")  # fmt: skip

    if not control.shows_power:
        return said(Verdict.NOT_TESTABLE, f"; positive control: {control.text()}: plain {broken} is not sick at this "
                    "depth, so there is nothing for a remedy to show")  # fmt: skip
    text += f"; positive control: {control.text()}"
    decided = decide(effect, delta)
    if decided == Verdict.INCONCLUSIVE:
        return said(Verdict.INCONCLUSIVE, ": the interval straddles it, so the data cannot tell")
    if decided == Verdict.CONTRADICTED:
        return said(Verdict.CONTRADICTED, f": {remedy} does not balance the gradients better than {broken}")
    if r >= SICK:
        return said(Verdict.QUALIFIED, f": {remedy} narrows the gap but its gradients still vanish or explode "
                    f"(at least {SICK:g} decades) in this short run")  # fmt: skip
    return said(Verdict.SUPPORTED, f": plain {broken} gradients vanish or explode, {remedy}'s do not")


SICK = 2.0  # decades (100x) between the first and the last block's gradient norm: vanishing or exploding


def _rises(found: list[Value]) -> tuple[dict[str, dict[Any, float]], dict[str, tuple[int, int]]]:
    """Per positional scheme: seed -> loss change from the training length to the longest evaluated
    one (the same model scored twice: a repeated measure), and the two lengths."""
    rises, lengths = {}, {}
    for pos in sorted({v.get("pos") for v in found}):
        sub = sorted((v for v in found if v.get("pos") == pos), key=lambda v: int(v.get("eval_len")))
        short, long = by_seed(sub[0]), by_seed(sub[-1])
        rises[pos] = {seed: long[seed] - short[seed] for seed in short if seed in long}
        lengths[pos] = (int(sub[0].get("eval_len")), int(sub[-1].get("eval_len")))
    return rises, lengths


@register_rule("extrapolation")
def extrapolation(
    ev: Evidence, scheme: str = "alibi", controls: tuple[str, ...] = ("abs", "none"), delta: float = 0.0
) -> Judgement:
    """The scheme works beyond its training length: its loss rise from the training length to the longest
    evaluated one (each seed's model scored at both) stays below delta (non-inferiority: the interval of
    the rise lies below +delta). Positive controls, schemes known to fail there (learned absolute
    positions; no position information at all), must each rise beyond delta: else the test cannot see a
    failure at this budget and is not testable at this scale."""
    found = base_values(ev, EXTRAPOLATION_VAL_LOSS)
    if not found:
        return _absent(ev, EXTRAPOLATION_VAL_LOSS)
    rises, lengths = _rises(found)
    unit = "nats/token"
    effects = {pos: paired_t(list(r.values())) for pos, r in rises.items() if r}
    rows = [{"label": f"{pos}: {lengths[pos][0]} -> {lengths[pos][1]} tokens", "value": e.estimate, "unit": unit,
             "method": f"held-out loss change, {e.method}" + (f" [{e.ci_low:+.3f}, {e.ci_high:+.3f}]"
                                                              if e.ci_low is not None else "")}
            for pos, e in effects.items()]  # fmt: skip
    needed = [scheme, *controls]
    if any(p not in effects for p in needed):
        return Judgement(
            Verdict.NOT_TESTED, f"needs the {', '.join(p for p in needed if p not in effects)} runs", rows
        )
    short = {pos: v for v in found for pos in [v.get("pos")] if int(v.get("eval_len")) == lengths[pos][0]}
    # the scheme's own models must be past the initial fall; the controls' weaker ones need only fail
    late = _late(ev, {f"{scheme} at {lengths[scheme][0]} tokens": short[scheme]}, rows, EXTRAPOLATION_VAL_LOSS,
                 delta)  # fmt: skip
    if late:
        return late
    rise = effects[scheme]
    checks = [Control(f"{c}: loss rise {lengths[c][0]} -> {lengths[c][1]} tokens", effects[c], delta, unit)
              for c in controls]  # fmt: skip
    weak = [c for c in checks if not c.shows_power]
    control = weak[0] if weak else checks[0]
    text = (f"{scheme}: held-out loss change from {lengths[scheme][0]} to {lengths[scheme][1]} tokens "
            f"{rise.text(unit)}, minimal effect of interest {delta:g}; positive controls: "
            + "; ".join(c.text() for c in checks))  # fmt: skip
    scale = scale_of(found)

    def said(verdict: str, more: str) -> Judgement:
        return Judgement(verdict, (PROXY if scale == "proxy" else "") + text + more, rows, scale=scale,
                       metric=EXTRAPOLATION_VAL_LOSS, effect=rise, delta=delta, control=control)  # fmt: skip

    if weak:
        return said(Verdict.NOT_TESTABLE, f": {', '.join(c.name.split(':')[0] for c in weak)} does not fail beyond the "
                    "training length at this budget, so the test cannot see a failure")  # fmt: skip
    if rise.ci_high is not None and rise.ci_high < delta:
        return said(
            Verdict.SUPPORTED,
            f": {scheme} keeps its loss beyond the training length, where the controls fail",
        )
    if rise.ci_low is not None and rise.ci_low > delta:
        return said(Verdict.CONTRADICTED, f": {scheme}'s loss rises beyond the training length")
    return said(Verdict.INCONCLUSIVE, ": the interval straddles it, so the data cannot tell")


@register_rule("mqa_tradeoff")
def mqa_tradeoff(ev: Evidence, delta: float = 0.0) -> Judgement:
    """One KV head: KV-cache bytes saved and decode speed gained, against the validation-loss cost. The
    effect is MQA's quality against MHA's (mha - mqa loss, paired by seed): the claim holds where its
    interval stays above -delta (non-inferiority) and decoding is faster beyond the timing noise."""
    loss = {v.get("attn"): v for v in base_values(ev, ATTN_KV_VAL_LOSS)}
    cache = {v.get("attn"): v.value for v in base_values(ev, KV_CACHE_BYTES, model="full")}
    if not loss or not cache:
        return _absent(ev, ATTN_KV_VAL_LOSS)
    if not {"mha", "mqa"} <= set(loss) or not {"mha", "mqa"} <= set(cache):
        return Judgement(Verdict.NOT_TESTED, "needs multi-head and multi-query runs")
    kept = compare([loss["mha"], loss["mqa"]], [1, -1])  # > 0: MQA's loss is lower
    saving = cache["mha"] / cache["mqa"]
    rows = [{"label": f"val loss {k}", "value": float(v.value), "unit": "nats/token", "method": "training (mean of seeds)"}
            for k, v in sorted(loss.items())]  # fmt: skip
    rows += [{"label": f"KV cache {k}", "value": float(v), "unit": "bytes", "method": "closed form, full scale"}
             for k, v in sorted(cache.items())]  # fmt: skip
    late = _late(ev, {k: loss[k] for k in ("mqa", "mha")}, rows, ATTN_KV_VAL_LOSS, delta)
    if late:
        return late
    scale = scale_of(list(loss.values()))
    text = (f"KV cache {saving:.0f}x smaller (closed form, full scale){generate_saving(ev, rows)}; MQA's loss "
            f"below MHA's by {kept.text('nats/token')} ({scale} scale), minimal effect of interest {delta:g}")  # fmt: skip

    def said(verdict: str, more: str) -> Judgement:
        return _stated(verdict, text + more, rows, list(loss.values()), ATTN_KV_VAL_LOSS, kept, delta)

    if kept.ci_high is not None and kept.ci_high < -delta:
        return said(Verdict.QUALIFIED, ": the smaller cache costs measurable quality")
    if kept.ci_low is None or kept.ci_low < -delta:
        return said(Verdict.INCONCLUSIVE, ": the interval reaches a cost beyond the minimal effect, so the data cannot "
                    "tell whether quality is kept")  # fmt: skip
    speed = decode_speedup(ev)
    if speed is None:
        return said(Verdict.QUALIFIED, "; decode speed with one KV head not measured yet (speed)")
    speedup, noise, where = speed
    rows.append({"label": "decode speed-up, one KV head", "value": speedup, "unit": "ratio",
                 "method": f"speed ({where})"})  # fmt: skip
    more = f"; cached decoding x{speedup:.2f} as fast ({where}, timing noise {noise:.0%})"
    if speedup > 1 + noise:
        return said(Verdict.SUPPORTED, more)
    if speedup < 1 - noise:
        return said(Verdict.CONTRADICTED, more + ": one KV head decodes slower")
    return said(Verdict.INCONCLUSIVE, more + ": no difference beyond the timing noise")
