"""Verdict rules: small registered functions from stored results to a verdict.

A rule gets the evidence (the query over the results, the study, fidelity entries) and its
parameters from the catalogue, and returns a Verdict. Rules name metrics by their declared names
(results/metrics.py); missing results give `not tested yet`, never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..results.derive import growth_exponent, relative_iqr
from ..results.metrics import lookup
from .evidence import PROXY, Evidence, Verdict, axis_series, base_values, missing, samples, scale_of
from .stats import Effect, contrast, decide, exact

VERDICTS = ("supported", "qualified", "contradicted", "inconclusive", "not tested yet")
RuleFn = Callable[..., Verdict]
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


def _groups(s: Any) -> dict[Any, list[float]]:
    """Axis value -> the samples (seeds) of the series' values there."""
    out: dict[Any, list[float]] = {}
    for v in s.values:
        if v.value is not None and s.axis in v.swept:
            out.setdefault(v.swept[s.axis], []).extend(samples(v))
    return {k: out[k] for k in sorted(out)}


def _stated(verdict: str, text: str, rows: list, s: Any, effect: Effect, delta: float) -> Verdict:
    scale = scale_of(s.values)
    return Verdict(verdict, (PROXY if scale == "proxy" else "") + text, rows, scale=scale, metric=s.metric,
                   effect=effect, delta=delta)  # fmt: skip


def _endpoints(s: Any, sign: float) -> Effect:
    """sign * (last - first) of the series' group means, with its interval where there are seeds."""
    g = list(_groups(s).values())
    if all(len(x) == 1 for x in (g[0], g[-1])):
        return exact(sign * (g[-1][0] - g[0][0]))
    return contrast([g[-1], g[0]], [sign, -sign])


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
) -> Verdict:
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
    if decided == "contradicted":
        return _stated("contradicted", f"{metric} does not rise with {axis}; {span}", rows, s, effect, delta)
    if decided == "inconclusive":
        why = (
            "one sample per point, so no interval"
            if effect.ci_low is None and not effect.exact
            else "the interval straddles"
        )
        return _stated("inconclusive", f"{span}: {why}", rows, s, effect, delta)
    if not np.all(np.diff(s.ys) > 0):
        return _stated("qualified", f"{span}, but not at every step of {axis}", rows, s, effect, delta)
    differ = ev.fidelity.get(qualify_with_fidelity or "", {}).get("notes_differ", "")
    if differ:
        return _stated("qualified", f"{span}; but only because {differ}", rows, s, effect, delta)
    return _stated("supported", span, rows, s, effect, delta)


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
        rows.append({"label": f"{part}: {axis} {s.keys[0]} -> {s.keys[-1]}", "value": float(grew),
                     "unit": lookup(parts).unit, "method": f"{parts} rise"})  # fmt: skip
        shares.append((grew, part))
    if not shares or not rise:
        return ""
    listed = ", ".join(
        f"{part} {grew / rise:.1%}" for grew, part in sorted(shares, key=lambda t: (-t[0], t[1]))
    )
    return f"; of the rise ({seq} tokens): {listed}"


@register_rule("decreases_with")
def decreases_with(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Verdict:
    """Loss falls from the axis's first value to its last by more than delta (Welch interval over seeds)."""
    s = axis_series(ev, metric, axis)
    if len(s) < 2:
        return missing(metric)
    ys, rows = s.ys, s.rows(f"{metric} (mean of seeds)")
    effect, unit = _endpoints(s, -1.0), lookup(metric).unit
    span = (f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} {ys[0]:.3f} -> {ys[-1]:.3f}; fall {effect.text(unit)}, "
            f"minimal effect of interest {delta:g}")  # fmt: skip
    decided = decide(effect, delta)
    if decided == "inconclusive":  # a null result is never support
        return _stated("inconclusive", f"{span}: the interval straddles it, so the data cannot tell", rows, s,
                       effect, delta)  # fmt: skip
    if decided == "contradicted":
        return _stated("contradicted", f"{span}: no fall of that size", rows, s, effect, delta)
    if not np.all(np.diff(ys) < 0):
        return _stated("qualified", f"{span}, but not at every step", rows, s, effect, delta)
    return _stated("supported", span, rows, s, effect, delta)


@register_rule("diminishing_returns")
def diminishing_returns(ev: Evidence, metric: str, axis: str, delta: float = 0.0) -> Verdict:
    """The first step's gain is real, and the last step gains less: (m0 - m1) - (m_{k-1} - m_k) > delta."""
    s = axis_series(ev, metric, axis)
    if len(s) < 3:
        return missing(metric) if not len(s) else Verdict("not tested yet", f"needs 3 or more {axis} values")
    g, unit = list(_groups(s).values()), lookup(metric).unit
    rows = s.rows(f"{metric} (mean of seeds)")
    first = contrast([g[0], g[1]], [1, -1])
    text = ", ".join(f"{x:+.3f}" for x in -np.diff(s.ys))
    if decide(first, delta) != "supported":  # no gain at all is not a diminishing one
        return _stated("inconclusive", f"the first step along {axis} gains {first.text(unit)} (gains {text}): "
                       "with no gain shown to shrink, the data cannot tell", rows, s, first, delta)  # fmt: skip
    shrink = contrast([g[0], g[1], g[-2], g[-1]], [1, -1, -1, 1])
    verdict, said = (
        decide(shrink, delta, helps=False),
        f"gains along {axis}: {text}; first gain minus last {shrink.text(unit)}",
    )
    if verdict == "supported" and not np.all(np.diff(-np.diff(s.ys)) < 0):
        return _stated(
            "qualified", f"{said}, but the gains do not shrink at every step", rows, s, shrink, delta
        )
    return _stated(verdict, said, rows, s, shrink, delta)


@register_rule("gradient_health")
def gradient_health(
    ev: Evidence, remedy: str = "deepnorm", broken: str = "post_norm", delta: float = 1.0
) -> Verdict:
    """At the largest depth tested, over the seeds: the imbalance |log10(first-block / last-block gradient
    norm)| of the plain layout minus the remedy's, in decades. Supported where the interval lies beyond
    delta and the plain layout's gradients are sick (beyond SICK decades); qualified where the plain one
    is healthy (nothing to remedy at this depth) or the remedy stays sick (narrows, does not close)."""
    found = base_values(ev, "grad_norm_first_over_last")
    if not found:
        return missing("grad_norm_first_over_last")
    depth = max(int(v.get("depth")) for v in found)
    step = max(int(v.get("step")) for v in found)
    logs: dict[str, list[float]] = {}
    for v in found:
        if int(v.get("depth")) == depth and int(v.get("step")) == step and v.value > 0:
            logs.setdefault(v.get("norm"), []).append(abs(float(np.log10(v.value))))
    rows = [{"label": f"{k}, depth {depth}", "value": float(np.mean(x)), "unit": "decades",
             "method": f"|log10 first/last block grad norm|, mean of {len(x)} seeds"}
            for k, x in sorted(logs.items())]  # fmt: skip
    if broken not in logs or remedy not in logs:
        return Verdict("not tested yet", f"needs {broken} and {remedy} runs", rows)
    effect = contrast([logs[broken], logs[remedy]], [1, -1])  # > 0: the remedy is the more balanced
    scale = scale_of(found)
    b, r = float(np.mean(logs[broken])), float(np.mean(logs[remedy]))
    text = (f"{PROXY if scale == 'proxy' else ''}at depth {depth}, gradients at the first block are "
            f"{b:.1f} decades off the last's with plain {broken} and {r:.1f} with {remedy}; imbalance removed "
            f"{effect.text('decades')}, minimal effect of interest {delta:g}")  # fmt: skip

    def said(verdict: str, more: str) -> Verdict:
        return Verdict(verdict, text + more, rows, scale=scale, metric="grad_norm_first_over_last",
                       effect=effect, delta=delta, unit="decades")  # fmt: skip

    if b < SICK:
        return said("qualified", f": only at depths beyond {depth}, since plain {broken} is not sick there "
                    f"(under {SICK:g} decades)")  # fmt: skip
    decided = decide(effect, delta)
    if decided == "inconclusive":
        return said("inconclusive", ": the interval straddles it, so the data cannot tell")
    if decided == "contradicted":
        return said("contradicted", f": {remedy} does not balance the gradients better than {broken}")
    if r >= SICK:
        return said("qualified", f": {remedy} narrows the gap but its gradients still vanish or explode "
                    f"(at least {SICK:g} decades) in this short run")  # fmt: skip
    return said("supported", f": plain {broken} gradients vanish or explode, {remedy}'s do not")


SICK = 2.0  # decades (100x) between the first and the last block's gradient norm: vanishing or exploding


@register_rule("kernel_ran")
def kernel_ran(ev: Evidence, expected: str = "flash") -> Verdict:
    """Which SDPA backend the profiler saw in a training step, per device."""
    ran = ev.results.values("ran_train", method="profiler")
    if not ran:
        return missing("ran_train")
    by_device: dict[str, list[str]] = {}
    for v in ran:
        by_device[v.device] = sorted({*by_device.get(v.device, []), str(v.get("backend"))})
    rows = [
        {"label": f"ran on {d}", "value": ", ".join(b), "method": "profiler"}
        for d, b in sorted(by_device.items())
    ]
    gpu = {d: b for d, b in by_device.items() if d.startswith("cuda")}
    if gpu:
        if all(b == [expected] for b in gpu.values()):
            return Verdict("supported", f"the {expected} kernel ran on the GPU for every variant", rows)
        on = "; ".join(f"{d}: {', '.join(b)}" for d, b in gpu.items())
        return Verdict("contradicted", f"on the GPU another kernel ran: {on}", rows)
    differ = ev.fidelity.get("attn_flash", {}).get("notes_differ", "")
    cpu = "; ".join(f"{d}: {', '.join(b)}" for d, b in sorted(by_device.items()))
    return Verdict("qualified", f"on CPU the {expected} kernel ran ({cpu}); no GPU results yet"
                   + (f", and there {differ}" if differ else ""), rows)  # fmt: skip


@register_rule("extrapolation")
def extrapolation(
    ev: Evidence, scheme: str = "alibi", reference: str = "none", delta: float = 0.0
) -> Verdict:
    """Loss rise from the training length to the longest evaluated one: the scheme's against the
    reference's, (ref rise - scheme rise) > delta over seeds."""
    found = base_values(ev, "extrapolation_val_loss")
    if not found:
        return missing("extrapolation_val_loss")
    rows, ends = [], {}
    for pos in sorted({v.get("pos") for v in found}):
        sub = sorted((v for v in found if v.get("pos") == pos), key=lambda v: int(v.get("eval_len")))
        ends[pos] = (samples(sub[0]), samples(sub[-1]))
        rows.append({"label": f"{pos}: {sub[0].get('eval_len')} -> {sub[-1].get('eval_len')}",
                     "value": float(sub[-1].value - sub[0].value), "unit": "nats/token",
                     "method": "val loss change (mean of seeds)"})  # fmt: skip
    if scheme not in ends or reference not in ends:
        return Verdict("not tested yet", f"needs '{scheme}' and '{reference}' runs", rows)
    (s0, s1), (r0, r1) = ends[scheme], ends[reference]
    effect = contrast([r1, r0, s1, s0], [1, -1, -1, 1])
    text = ", ".join(f"{r['label'].split(':')[0]} {r['value']:+.3f}" for r in rows)
    verdict = decide(effect, delta)
    said = {"supported": f"{scheme} degrades less than {reference} beyond the training length",
            "contradicted": f"{scheme} does not extrapolate better than {reference}",
            "inconclusive": "the test cannot tell the schemes apart"}[verdict]  # fmt: skip
    scale = scale_of(found)
    return Verdict(verdict, f"{PROXY if scale == 'proxy' else ''}{said}: {reference} rise minus {scheme} rise "
                   f"{effect.text('nats/token')} (loss change from the training length: {text})", rows,
                   scale=scale, metric="extrapolation_val_loss", effect=effect, delta=delta)  # fmt: skip


def decode_speedup(ev: Evidence) -> tuple[float, float, str] | None:
    """The stored multi-query over multi-head cached-decode speed-up of the base at the longest length,
    on a GPU where one was measured: (speed-up, timing noise, where). The noise is the sum of both
    timings' relative IQRs, or the drift of a step timed twice (`train_step_repeat_diff`) if larger."""
    ups = base_values(ev, "kv_ablation_decode_speedup")
    if not ups:
        return None
    top = max(v.seq_len for v in ups)
    up = next(v for v in ups if v.seq_len == top)
    times = base_values(ev, "kv_ablation_decode_time", seq_len=top, device=up.device)
    by_attn = {v.get("attn"): v for v in times}
    if not {"mqa", "mha"} <= set(by_attn):
        return None
    noise = relative_iqr(by_attn["mqa"].samples) + relative_iqr(by_attn["mha"].samples)
    drift = [v.value for v in ev.results.values("train_step_repeat_diff", device=up.device)]
    noise = max(noise, max(drift, default=0.0))
    return float(up.value), float(noise), f"{up.device}, seq_len {top}"


def _generate_saving(ev: Evidence, rows: list) -> str:
    """The cache generate() really kept, one KV head against one per head (speed, the flags-off builds)."""
    held = base_values(ev, "kv_ablation_generate_cache", method="measured")
    if not held:
        return ""
    top = max(v.seq_len for v in held)
    got = {(v.get("attn"), v.get("part")): v for v in held if v.seq_len == top}
    if not all((a, p) in got for a in ("mqa", "mha") for p in ("kv", "object")):
        return ""
    for (attn, part), v in sorted(got.items()):
        rows.append({"label": f"generate cache {part} {attn} ({v.get('tokens')} tokens)", "value": float(v.value),
                     "unit": "bytes", "method": f"speed, measured ({v.device}, {v.get('dropped')} off)"})  # fmt: skip
    kv = got["mha", "kv"].value / got["mqa", "kv"].value
    whole = got["mha", "object"].value / got["mqa", "object"].value
    where = f"{got['mqa', 'kv'].device}, {got['mqa', 'kv'].get('dropped')} off"
    return (
        f"; the cache generate() really keeps: K/V {kv:.0f}x smaller, the whole cache object {whole:.2f}x "
        f"(hidden states too; measured at {top} tokens, {where})"
    )


@register_rule("mqa_tradeoff")
def mqa_tradeoff(ev: Evidence, delta: float = 0.0) -> Verdict:
    """One KV head: KV-cache bytes saved and decode speed gained, against the validation-loss cost. The
    effect is MQA's quality against MHA's (mha - mqa loss, over seeds): the claim holds where it stays
    above -delta and decoding is faster beyond the timing noise."""
    loss = {v.get("attn"): v for v in base_values(ev, "attn_kv_val_loss")}
    cache = {v.get("attn"): v.value for v in base_values(ev, "kv_cache_bytes", model="full")}
    if not loss or not cache:
        return missing("attn_kv_val_loss")
    if not {"mha", "mqa"} <= set(loss) or not {"mha", "mqa"} <= set(cache):
        return Verdict("not tested yet", "needs multi-head and multi-query runs")
    kept = contrast([samples(loss["mha"]), samples(loss["mqa"])], [1, -1])  # > 0: MQA's loss is lower
    saving = cache["mha"] / cache["mqa"]
    rows = [{"label": f"val loss {k}", "value": float(v.value), "unit": "nats/token", "method": "training (mean of seeds)"}
            for k, v in sorted(loss.items())]  # fmt: skip
    rows += [{"label": f"KV cache {k}", "value": float(v), "unit": "bytes", "method": "closed form, full scale"}
             for k, v in sorted(cache.items())]  # fmt: skip
    scale = scale_of(list(loss.values()))
    text = (f"KV cache {saving:.0f}x smaller (closed form, full scale){_generate_saving(ev, rows)}; MQA's loss "
            f"below MHA's by {kept.text('nats/token')} ({scale} scale), minimal effect of interest {delta:g}")  # fmt: skip

    def said(verdict: str, more: str) -> Verdict:
        return Verdict(
            verdict, text + more, rows, scale=scale, metric="attn_kv_val_loss", effect=kept, delta=delta
        )

    if kept.ci_high is not None and kept.ci_high < -delta:
        return said("qualified", ": the smaller cache costs measurable quality")
    if kept.ci_low is None or kept.ci_low < -delta:
        return said("inconclusive", ": the interval reaches a cost beyond the minimal effect, so the data cannot "
                    "tell whether quality is kept")  # fmt: skip
    speed = decode_speedup(ev)
    if speed is None:
        return said("qualified", "; decode speed with one KV head not measured yet (speed)")
    speedup, noise, where = speed
    rows.append({"label": "decode speed-up, one KV head", "value": speedup, "unit": "ratio",
                 "method": f"speed ({where})"})  # fmt: skip
    more = f"; cached decoding x{speedup:.2f} as fast ({where}, timing noise {noise:.0%})"
    if speedup > 1 + noise:
        return said("supported", more)
    if speedup < 1 - noise:
        return said("contradicted", more + ": one KV head decodes slower")
    return said("inconclusive", more + ": no difference beyond the timing noise")


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
        return Verdict("qualified", f"x-transformers lacks it; orca-analysis realises it: {entry['how']}", rows,
                       "fidelity")  # fmt: skip
    return Verdict("supported", entry["how"], rows, "fidelity")


@register_rule("not_yet")
def not_yet(ev: Evidence) -> Verdict:
    return Verdict("not tested yet", "no rule over stored results exists for this claim yet")


from . import rules_design  # noqa: E402, F401  (registers the description rules)
