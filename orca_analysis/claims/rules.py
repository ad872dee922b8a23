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
from .evidence import Evidence, Verdict, axis_series, base_values, missing

VERDICTS = ("supported", "qualified", "contradicted", "inconclusive", "not tested yet")
RuleFn = Callable[..., Verdict]
RULES: dict[str, RuleFn] = {}
METRIC_PARAMS = ("metric",)  # rule parameters that name a declared metric (checked when the catalogue loads)


def register_rule(name: str) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        RULES[name] = fn
        return fn

    return wrap


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
) -> Verdict:
    s = axis_series(ev, metric, axis, method, seq_len, labels, last_step)
    if len(s) < 2:
        return missing(metric)
    k, ratio = growth_exponent(s.keys, s.ys), s.ys[-1] / s.ys[0]
    rows = s.rows(metric + (f" ({method})" if method else ""))
    span = f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} x{ratio:.2f} (~{axis}^{k:.2f})"
    if not np.all(np.diff(s.ys) > 0):
        return Verdict("contradicted", f"{metric} does not rise steadily with {axis}; {span}", rows)
    differ = ev.fidelity.get(qualify_with_fidelity or "", {}).get("notes_differ", "")
    if differ:
        return Verdict("qualified", f"{span}; but only because {differ}", rows)
    return Verdict("supported", span, rows)


@register_rule("decreases_with")
def decreases_with(ev: Evidence, metric: str, axis: str) -> Verdict:
    """Loss falls as the axis grows, by more than the spread between seeds."""
    s = axis_series(ev, metric, axis)
    if len(s) < 2:
        return missing(metric)
    noise, ys = s.spread, s.ys
    rows = s.rows(f"{metric} (mean of seeds)")
    span = f"{axis} {s.keys[0]} -> {s.keys[-1]}: {metric} {ys[0]:.3f} -> {ys[-1]:.3f} (seed spread up to {noise:.3f})"
    change = ys[-1] - ys[0]
    if abs(change) <= noise:  # a null result is never support
        return Verdict("inconclusive", f"{span}: no difference beyond the seed spread, so the data cannot "
                       "tell (proxy scale)", rows)  # fmt: skip
    if change > 0:
        return Verdict("contradicted", f"{span}: {metric} rises instead", rows)
    if np.all(np.diff(ys) < 0):
        return Verdict("supported", span, rows)
    return Verdict("qualified", f"{span}, but not at every step", rows)


@register_rule("diminishing_returns")
def diminishing_returns(ev: Evidence, metric: str, axis: str) -> Verdict:
    s = axis_series(ev, metric, axis)
    if len(s) < 3:
        return missing(metric) if not len(s) else Verdict("not tested yet", f"needs 3 or more {axis} values")
    gains = -np.diff(s.ys)  # loss reduction per step along the axis
    rows = s.rows(f"{metric} (mean of seeds)")
    text = ", ".join(f"{g:+.3f}" for g in gains)
    if np.all(np.abs(gains) <= s.spread):  # no gain at all is not a diminishing gain
        return Verdict("inconclusive", f"no step along {axis} changes {metric} beyond the seed spread "
                       f"({s.spread:.3f}): {text}; with no gain to shrink, the data cannot tell (proxy scale)",
                       rows)  # fmt: skip
    if np.all(np.diff(gains) < 0):
        return Verdict("supported", f"each step along {axis} improves {metric} less: {text}", rows)
    return Verdict("contradicted", f"gains along {axis} do not shrink: {text}", rows)


@register_rule("gradient_health")
def gradient_health(ev: Evidence, remedy: str = "deepnorm", broken: str = "post_norm") -> Verdict:
    """At the largest depth tested, do plain post-norm gradients vanish or explode while the remedy's do not?"""
    found = base_values(ev, "grad_norm_first_over_last")
    if not found:
        return missing("grad_norm_first_over_last")
    depth = max(int(v.get("depth")) for v in found)
    step = max(int(v.get("step")) for v in found)
    ratio = {
        v.get("norm"): v.value for v in found if int(v.get("depth")) == depth and int(v.get("step")) == step
    }
    rows = [{"label": f"{k}, depth {depth}", "value": float(v), "unit": "ratio", "method": "first/last block grad norm"}
            for k, v in sorted(ratio.items())]  # fmt: skip
    if broken not in ratio or remedy not in ratio:
        return Verdict("not tested yet", f"needs {broken} and {remedy} runs", rows)

    def sick(v: float) -> bool:
        return v < 1e-2 or v > 1e2

    text = ", ".join(f"{k} {v:.2g}" for k, v in sorted(ratio.items()))
    if sick(ratio[broken]) and not sick(ratio[remedy]):
        return Verdict("supported", f"at depth {depth} plain {broken} gradients reach the first block "
                       f"{ratio[broken]:.2g}x as strong as the last (vanishing); {remedy} keeps "
                       f"{ratio[remedy]:.2g}x ({text})", rows)  # fmt: skip
    if not sick(ratio[broken]):
        return Verdict("qualified", f"no vanishing or exploding gradients up to depth {depth} at proxy scale ({text})",
                       rows)  # fmt: skip
    if abs(np.log10(ratio[remedy])) < abs(np.log10(ratio[broken])) / 2:
        return Verdict("qualified", f"at depth {depth} plain {broken} gradients vanish ({ratio[broken]:.2g}); "
                       f"{remedy} narrows the gap to {ratio[remedy]:.2g} but does not close it in this short "
                       f"proxy run ({text})", rows)  # fmt: skip
    return Verdict("contradicted", f"{remedy} does not keep gradients healthy either ({text})", rows)


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
def extrapolation(ev: Evidence, scheme: str = "alibi", reference: str = "none") -> Verdict:
    """Loss at the longest evaluated length versus the training length, for a scheme and the reference."""
    found = base_values(ev, "extrapolation_val_loss")
    if not found:
        return missing("extrapolation_val_loss")
    rows, growth = [], {}
    for pos in sorted({v.get("pos") for v in found}):
        sub = sorted((v for v in found if v.get("pos") == pos), key=lambda v: int(v.get("eval_len")))
        growth[pos] = sub[-1].value - sub[0].value
        rows.append({"label": f"{pos}: {sub[0].get('eval_len')} -> {sub[-1].get('eval_len')}",
                     "value": float(growth[pos]), "unit": "nats/token", "method": "val loss change (mean of seeds)"})  # fmt: skip
    if scheme not in growth or reference not in growth:
        return Verdict("not tested yet", f"needs '{scheme}' and '{reference}' runs", rows)
    noise = max((v.spread or 0.0 for v in found), default=0.0)
    text = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(growth.items()))
    if abs(growth[reference]) <= noise and abs(growth[scheme]) <= noise:
        return Verdict("inconclusive", "no scheme degrades at longer lengths at proxy scale, so the test cannot tell "
                       f"them apart (loss change from the training length: {text}; seed spread {noise:.3f})", rows)  # fmt: skip
    if growth[scheme] < growth[reference] - noise:
        return Verdict(
            "supported", f"{scheme} degrades less than {reference} beyond the training length: {text}", rows
        )
    return Verdict("contradicted", f"{scheme} does not extrapolate better than {reference}: {text}", rows)


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


@register_rule("mqa_tradeoff")
def mqa_tradeoff(ev: Evidence) -> Verdict:
    """One KV head: KV-cache bytes saved and decode speed gained, against the validation-loss cost."""
    loss = {v.get("attn"): v for v in base_values(ev, "attn_kv_val_loss")}
    cache = {v.get("attn"): v.value for v in base_values(ev, "kv_cache_bytes", model="full")}
    if not loss or not cache:
        return missing("attn_kv_val_loss")
    if not {"mha", "mqa"} <= set(loss) or not {"mha", "mqa"} <= set(cache):
        return Verdict("not tested yet", "needs multi-head and multi-query runs")
    spread = max(v.spread or 0.0 for v in loss.values())
    cost, saving = loss["mqa"].value - loss["mha"].value, cache["mha"] / cache["mqa"]
    rows = [{"label": f"val loss {k}", "value": float(v.value), "unit": "nats/token", "method": "training (mean of seeds)"}
            for k, v in sorted(loss.items())]  # fmt: skip
    rows += [{"label": f"KV cache {k}", "value": float(v), "unit": "bytes", "method": "closed form, full scale"}
             for k, v in sorted(cache.items())]  # fmt: skip
    text = f"KV cache {saving:.0f}x smaller; validation loss {cost:+.3f} (seed spread {spread:.3f})"
    if cost > spread:
        return Verdict("qualified", text + ": the smaller cache costs measurable quality", rows)
    speed = decode_speedup(ev)
    if speed is None:
        return Verdict("qualified", text + "; decode speed with one KV head not measured yet (speed)", rows)
    speedup, noise, where = speed
    rows.append(
        {
            "label": "decode speed-up, one KV head",
            "value": speedup,
            "unit": "ratio",
            "method": f"speed ({where})",
        }
    )
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
        return Verdict("qualified", f"x-transformers lacks it; orca-analysis realises it: {entry['how']}", rows,
                       "fidelity")  # fmt: skip
    return Verdict("supported", entry["how"], rows, "fidelity")


@register_rule("not_yet")
def not_yet(ev: Evidence) -> Verdict:
    return Verdict("not tested yet", "no rule over stored results exists for this claim yet")


from . import rules_design  # noqa: E402, F401  (registers the description rules)
