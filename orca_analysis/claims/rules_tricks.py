"""Rules over trained models for the notes' tricks (measurement `training`): DeepNorm's gradient health at
depth, ALiBi's and xPos's extrapolation beyond the training length, and what one KV head costs in loss against
what it saves in cache and decoding time. The same discipline as rules_quality.py: paired by seed, read past the
initial fall, a positive control before a null result means anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..catalog.declared.training import (
    ATTN_KV_VAL_LOSS,
    EXTRAPOLATION_VAL_LOSS,
    GRAD_NORM_FIRST_OVER_LAST,
    KV_CACHE_BYTES,
)
from ..catalog.labels import Attn
from ..catalog.vocabulary import Verdict
from ..results.query import Value
from .evidence import (
    PROXY,
    Control,
    Evidence,
    Judgement,
    base_values,
    by_seed,
    compare,
    scale_of,
)
from .rules import decode_speedup, generate_saving, register_rule
from .rules_quality import early_read, judgement, no_results
from .stats import decide, paired, paired_t


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
        return no_results(ev, GRAD_NORM_FIRST_OVER_LAST)
    depth = max(int(v.get("depth")) for v in found)
    step = max(int(v.get("step")) for v in found)
    logs: dict[str, dict[Any, float]] = {}
    for v in found:
        if int(v.get("depth")) == depth and int(v.get("step")) == step and v.value > 0:
            logs.setdefault(v.get("norm"), {})[v.get("seed")] = abs(float(np.log10(v.value)))
    rows = [
        {
            "label": f"{k}, depth {depth}",
            "value": float(np.mean(list(x.values()))),
            "unit": "decades",
            "method": f"|log10 first/last block grad norm|, mean of {len(x)} seeds",
        }
        for k, x in sorted(logs.items())
    ]
    if broken not in logs or remedy not in logs:
        return Judgement(Verdict.NOT_TESTED, f"needs {broken} and {remedy} runs", rows)
    effect = paired([logs[broken], logs[remedy]], [1, -1])  # > 0: the remedy is the more balanced
    control = Control(
        f"plain {broken}'s imbalance at depth {depth}",
        paired_t(list(logs[broken].values())),
        delta,
        "decades",
    )
    b, r = float(np.mean(list(logs[broken].values()))), float(np.mean(list(logs[remedy].values())))
    text = (
        f"at depth {depth}, gradients at the first block are {b:.1f} decades off the last's with plain "
        f"{broken} and {r:.1f} with {remedy}; imbalance removed {effect.text('decades')}, minimal effect of "
        f"interest {delta:g}"
    )

    def said(verdict: str, more: str) -> Judgement:
        return judgement(
            verdict, text + more, rows, found, GRAD_NORM_FIRST_OVER_LAST, effect, delta, control, "decades"
        )

    if not control.shows_power:
        return said(
            Verdict.NOT_TESTABLE,
            f"; positive control: {control.text()}: plain {broken} is not sick at this "
            "depth, so there is nothing for a remedy to show",
        )
    text += f"; positive control: {control.text()}"
    decided = decide(effect, delta)
    if decided == Verdict.INCONCLUSIVE:
        return said(Verdict.INCONCLUSIVE, ": the interval straddles it, so the data cannot tell")
    if decided == Verdict.CONTRADICTED:
        return said(Verdict.CONTRADICTED, f": {remedy} does not balance the gradients better than {broken}")
    if r >= SICK:
        return said(
            Verdict.QUALIFIED,
            f": {remedy} narrows the gap but its gradients still vanish or explode "
            f"(at least {SICK:g} decades) in this short run",
        )
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
        return no_results(ev, EXTRAPOLATION_VAL_LOSS)
    rises, lengths = _rises(found)
    unit = "nats/token"
    effects = {pos: paired_t(list(r.values())) for pos, r in rises.items() if r}
    rows = [
        {
            "label": f"{pos}: {lengths[pos][0]} -> {lengths[pos][1]} tokens",
            "value": e.estimate,
            "unit": unit,
            "method": f"held-out loss change, {e.method}"
            + (f" [{e.ci_low:+.3f}, {e.ci_high:+.3f}]" if e.ci_low is not None else ""),
        }
        for pos, e in effects.items()
    ]
    needed = [scheme, *controls]
    if any(p not in effects for p in needed):
        return Judgement(
            Verdict.NOT_TESTED, f"needs the {', '.join(p for p in needed if p not in effects)} runs", rows
        )
    short = {pos: v for v in found for pos in [v.get("pos")] if int(v.get("eval_len")) == lengths[pos][0]}
    # the scheme's own models must be past the initial fall; the controls' weaker ones need only fail
    late = early_read(
        ev, {f"{scheme} at {lengths[scheme][0]} tokens": short[scheme]}, rows, EXTRAPOLATION_VAL_LOSS, delta
    )
    if late:
        return late
    rise = effects[scheme]
    checks = [
        Control(f"{c}: loss rise {lengths[c][0]} -> {lengths[c][1]} tokens", effects[c], delta, unit)
        for c in controls
    ]
    weak = [c for c in checks if not c.shows_power]
    control = weak[0] if weak else checks[0]
    text = (
        f"{scheme}: held-out loss change from {lengths[scheme][0]} to {lengths[scheme][1]} tokens "
        f"{rise.text(unit)}, minimal effect of interest {delta:g}; positive controls: "
        + "; ".join(c.text() for c in checks)
    )
    scale = scale_of(found)

    def said(verdict: str, more: str) -> Judgement:
        return Judgement(
            verdict,
            (PROXY if scale == "proxy" else "") + text + more,
            rows,
            scale=scale,
            metric=EXTRAPOLATION_VAL_LOSS,
            effect=rise,
            delta=delta,
            control=control,
        )

    if weak:
        return said(
            Verdict.NOT_TESTABLE,
            f": {', '.join(c.name.split(':')[0] for c in weak)} does not fail beyond the "
            "training length at this budget, so the test cannot see a failure",
        )
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
        return no_results(ev, ATTN_KV_VAL_LOSS)
    if not {Attn.MHA, Attn.MQA} <= set(loss) or not {Attn.MHA, Attn.MQA} <= set(cache):
        return Judgement(Verdict.NOT_TESTED, "needs multi-head and multi-query runs")
    kept = compare([loss[Attn.MHA], loss[Attn.MQA]], [1, -1])  # > 0: MQA's loss is lower
    saving = cache[Attn.MHA] / cache[Attn.MQA]
    rows = [
        {
            "label": f"val loss {k}",
            "value": float(v.value),
            "unit": "nats/token",
            "method": "training (mean of seeds)",
        }
        for k, v in sorted(loss.items())
    ]
    rows += [
        {"label": f"KV cache {k}", "value": float(v), "unit": "bytes", "method": "closed form, full scale"}
        for k, v in sorted(cache.items())
    ]
    late = early_read(ev, {k: loss[k] for k in (Attn.MQA, Attn.MHA)}, rows, ATTN_KV_VAL_LOSS, delta)
    if late:
        return late
    scale = scale_of(list(loss.values()))
    text = (
        f"KV cache {saving:.0f}x smaller (closed form, full scale){generate_saving(ev, rows)}; MQA's loss "
        f"below MHA's by {kept.text('nats/token')} ({scale} scale), minimal effect of interest {delta:g}"
    )

    def said(verdict: str, more: str) -> Judgement:
        return judgement(verdict, text + more, rows, list(loss.values()), ATTN_KV_VAL_LOSS, kept, delta)

    if kept.ci_high is not None and kept.ci_high < -delta:
        return said(Verdict.QUALIFIED, ": the smaller cache costs measurable quality")
    if kept.ci_low is None or kept.ci_low < -delta:
        return said(
            Verdict.INCONCLUSIVE,
            ": the interval reaches a cost beyond the minimal effect, so the data cannot "
            "tell whether quality is kept",
        )
    speed = decode_speedup(ev)
    if speed is None:
        return said(Verdict.QUALIFIED, "; decode speed with one KV head not measured yet (speed)")
    speedup, noise, where = speed
    rows.append(
        {
            "label": "decode speed-up, one KV head",
            "value": speedup,
            "unit": "ratio",
            "method": f"speed ({where})",
        }
    )
    more = f"; cached decoding x{speedup:.2f} as fast ({where}, timing noise {noise:.0%})"
    if speedup > 1 + noise:
        return said(Verdict.SUPPORTED, more)
    if speedup < 1 - noise:
        return said(Verdict.CONTRADICTED, more + ": one KV head decodes slower")
    return said(Verdict.INCONCLUSIVE, more + ": no difference beyond the timing noise")
