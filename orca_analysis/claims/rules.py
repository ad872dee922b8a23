"""Judgement rules: small registered functions from stored results to a verdict.

A rule gets the evidence (the query over the results, the study, fidelity entries) and its
parameters from the catalogue, and returns a Verdict. Rules name metrics by their declared names
(catalog/metrics.py); missing results give `not tested yet`, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..catalog.declared.kernels import RAN_TRAIN
from ..catalog.declared.speed import (
    KV_ABLATION_DECODE_SPEEDUP,
    KV_ABLATION_DECODE_TIME,
    KV_ABLATION_GENERATE_CACHE,
    TRAIN_STEP_REPEAT_DIFF,
)
from ..catalog.labels import Attn
from ..catalog.metrics import lookup
from ..catalog.vocabulary import Method, Verdict
from ..results.derive import growth_exponent, relative_iqr
from .evidence import PROXY, Evidence, Judgement, axis_series, base_values, compare, missing, scale_of
from .stats import Effect, decide, exact

RuleFn = Callable[..., Judgement]
RULES: dict[str, RuleFn] = {}
METRIC_PARAMS = (
    "metric",
    "parts",
)  # rule parameters that name a declared metric (checked when the catalogue loads)


def register_rule(name: str) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn

    return wrap


def _stated(verdict: str, text: str, rows: list, s: Any, effect: Effect, delta: float) -> Judgement:
    scale = scale_of(s.values)
    return Judgement(
        verdict,
        (PROXY if scale == "proxy" else "") + text,
        rows,
        scale=scale,
        metric=s.metric,
        effect=effect,
        delta=delta,
    )


def _endpoints(s: Any, sign: float) -> Effect:
    """sign * (last - first) of the series' values, exact for single values, else paired by seed."""
    at = {}
    for v in s.values:
        if v.value is not None and s.axis in v.swept:
            at.setdefault(v.swept[s.axis], v)
    first, last = at[min(at)], at[max(at)]
    if not first.samples and not last.samples:
        return exact(sign * (last.value - first.value))
    return compare([last, first], [sign, -sign])


@register_rule("grows_with")
def grows_with(
    ev: Evidence,
    metric: str,
    axis: str,
    method: str | None = None,
    seq_len: int | None = None,
    qualify_with_fidelity: str | None = None,
    labels: dict[str, Any] | None = None,
    last_step: bool = False,
    delta: float = 0.0,
    parts: str | None = None,
) -> Judgement:
    """The metric rises from the axis's first value to its last by more than delta, at every step.
    `parts`: a metric (label `part`) whose parts sum to this one; the rise is attributed to them."""
    s = axis_series(ev, metric, axis, method, seq_len, labels, last_step)
    if len(s) < 2:
        return missing(metric)
    k, ratio = growth_exponent(s.keys, s.ys), s.ys[-1] / s.ys[0] if s.ys[0] else float("inf")
    rows = s.rows(metric + (f" ({method})" if method else ""))
    effect = _endpoints(s, +1.0)
    unit = lookup(metric).unit
    span = f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} x{ratio:.2f} (~{axis}^{k:.2f}); rise {effect.text(unit)}"
    if parts:
        span += _attribution(ev, parts, axis, method, s, rows)
    decided = decide(effect, delta, helps=False)
    if decided == Verdict.CONTRADICTED:
        return _stated(
            Verdict.CONTRADICTED, f"{metric} does not rise with {axis}; {span}", rows, s, effect, delta
        )
    if decided == Verdict.INCONCLUSIVE:
        why = (
            "one sample per point, so no interval"
            if effect.ci_low is None and not effect.exact
            else "the interval straddles"
        )
        return _stated(Verdict.INCONCLUSIVE, f"{span}: {why}", rows, s, effect, delta)
    if not np.all(np.diff(s.ys) > 0):
        return _stated(Verdict.QUALIFIED, f"{span}, but not at every step of {axis}", rows, s, effect, delta)
    differ = ev.fidelity.get(qualify_with_fidelity or "", {}).get("notes_differ", "")
    if differ:
        return _stated(Verdict.QUALIFIED, f"{span}; but only because {differ}", rows, s, effect, delta)
    return _stated(Verdict.SUPPORTED, span, rows, s, effect, delta)


def _attribution(ev: Evidence, parts: str, axis: str, method: str | None, s: Any, rows: list) -> str:
    """Each part's share of the rise between the series' endpoints (same length and method)."""
    seq = s.values[0].seq_len if s.values else None
    rise = s.ys[-1] - s.ys[0]
    found = {v.get("part") for v in ev.results.values(parts, method=method)}
    shares = []
    for part in sorted(found):
        p = axis_series(ev, parts, axis, method, seq, {"part": part})
        if p.keys[:1] != s.keys[:1] or p.keys[-1:] != s.keys[-1:]:
            return ""  # the parts are not stored at both endpoints: no attribution
        grew = p.ys[-1] - p.ys[0]
        rows.append(
            {
                "label": f"{part}: {axis} {s.keys[0]} -> {s.keys[-1]}",
                "value": float(grew),
                "unit": lookup(parts).unit,
                "method": f"{parts} rise",
            }
        )
        shares.append((grew, part))
    if not shares or not rise:
        return ""
    listed = ", ".join(
        f"{part} {grew / rise:.1%}" for grew, part in sorted(shares, key=lambda t: (-t[0], t[1]))
    )
    return f"; of the rise ({seq} tokens): {listed}"


@register_rule("kernel_ran")
def kernel_ran(ev: Evidence, expected: str = "flash") -> Judgement:
    """Which SDPA backend the profiler saw in a training step, per device."""
    ran = ev.results.values(RAN_TRAIN, method=Method.PROFILER)
    if not ran:
        return missing(RAN_TRAIN)
    by_device: dict[str, list[str]] = {}
    for v in ran:
        by_device[v.device] = sorted({*by_device.get(v.device, []), str(v.get("backend"))})
    rows = [
        {"label": f"ran on {d}", "value": ", ".join(b), "method": Method.PROFILER}
        for d, b in sorted(by_device.items())
    ]
    gpu = {d: b for d, b in by_device.items() if d.startswith("cuda")}
    if gpu:
        if all(b == [expected] for b in gpu.values()):
            return Judgement(
                Verdict.SUPPORTED, f"the {expected} kernel ran on the GPU for every variant", rows
            )
        on = "; ".join(f"{d}: {', '.join(b)}" for d, b in gpu.items())
        return Judgement(Verdict.CONTRADICTED, f"on the GPU another kernel ran: {on}", rows)
    differ = ev.fidelity.get("attn_flash", {}).get("notes_differ", "")
    cpu = "; ".join(f"{d}: {', '.join(b)}" for d, b in sorted(by_device.items()))
    return Judgement(
        Verdict.QUALIFIED,
        f"on CPU the {expected} kernel ran ({cpu}); no GPU results yet"
        + (f", and there {differ}" if differ else ""),
        rows,
    )


def decode_speedup(ev: Evidence) -> tuple[float, float, str] | None:
    """The stored multi-query over multi-head cached-decode speed-up of the base at the longest length,
    on a GPU where one was measured: (speed-up, timing noise, where). The noise is the sum of both
    timings' relative IQRs, or the drift of a step timed twice (`train_step_repeat_diff`) if larger."""
    ups = base_values(ev, KV_ABLATION_DECODE_SPEEDUP)
    if not ups:
        return None
    top = max(v.seq_len for v in ups)
    up = next(v for v in ups if v.seq_len == top)
    times = base_values(ev, KV_ABLATION_DECODE_TIME, seq_len=top, device=up.device)
    by_attn = {v.get("attn"): v for v in times}
    if not {Attn.MQA, Attn.MHA} <= set(by_attn):
        return None
    noise = relative_iqr(by_attn[Attn.MQA].samples) + relative_iqr(by_attn[Attn.MHA].samples)
    drift = [v.value for v in ev.results.values(TRAIN_STEP_REPEAT_DIFF, device=up.device)]
    noise = max(noise, max(drift, default=0.0))
    return float(up.value), float(noise), f"{up.device}, seq_len {top}"


def generate_saving(ev: Evidence, rows: list) -> str:
    """The cache generate() really kept, one KV head against one per head (speed, the flags-off builds)."""
    held = base_values(ev, KV_ABLATION_GENERATE_CACHE, method=Method.MEASURED)
    if not held:
        return ""
    top = max(v.seq_len for v in held)
    got = {(v.get("attn"), v.get("part")): v for v in held if v.seq_len == top}
    if not all((a, p) in got for a in (Attn.MQA, Attn.MHA) for p in ("kv", "object")):
        return ""
    for (attn, part), v in sorted(got.items()):
        rows.append(
            {
                "label": f"generate cache {part} {attn} ({v.get('tokens')} tokens)",
                "value": float(v.value),
                "unit": "bytes",
                "method": f"speed, measured ({v.device}, {v.get('dropped')} off)",
            }
        )
    kv = got[Attn.MHA, "kv"].value / got[Attn.MQA, "kv"].value
    whole = got[Attn.MHA, "object"].value / got[Attn.MQA, "object"].value
    where = f"{got[Attn.MQA, 'kv'].device}, {got[Attn.MQA, 'kv'].get('dropped')} off"
    return (
        f"; the cache generate() really keeps: K/V {kv:.0f}x smaller, the whole cache object {whole:.2f}x "
        f"(hidden states too; measured at {top} tokens, {where})"
    )


@register_rule("fidelity")
def fidelity(ev: Evidence, flag: str, differs_means: str = Verdict.QUALIFIED) -> Judgement:
    entry = ev.fidelity.get(flag)
    if entry is None:
        return Judgement(Verdict.NOT_TESTED, f"the base model does not set '{flag}'")
    rows = [{"label": flag, "value": entry["value"], "method": f"fidelity: {entry['status']}"}]
    if entry["status"] == "unsupported":
        return Judgement(Verdict.CONTRADICTED, f"refused: {entry['how']}", rows, "fidelity")
    if entry["notes_differ"]:
        return Judgement(
            differs_means, f"{entry['notes_differ']}. What the code does: {entry['how']}", rows, "fidelity"
        )
    if entry["status"] == "realised":
        return Judgement(
            Verdict.QUALIFIED,
            f"x-transformers lacks it; orca-analysis realises it: {entry['how']}",
            rows,
            "fidelity",
        )
    return Judgement(Verdict.SUPPORTED, entry["how"], rows, "fidelity")


@register_rule("not_yet")
def not_yet(ev: Evidence) -> Judgement:
    return Judgement(Verdict.NOT_TESTED, "no rule over stored results exists for this claim yet")


from . import rules_design, rules_quality, rules_tricks  # noqa: E402, F401  (register the description and training rules)
