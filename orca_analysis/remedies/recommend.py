"""From stored results to recommendations: each remedy's before -> after, its outcome, and the
recommended design (the remedies that pass, combined).

Every number is read from the store through the query; nothing is re-derived here. `before` is the
variant the remedy changes, `after` the remedy's own variant (`fix:<id>`), at each stored length and
the study's smallest batch. A remedy
  passes        when every expectation is met and no probe that passed before fails after;
  fails         when an expectation is not met (moved the wrong way, a probe fails, the proxy loss's paired
                95% interval lies beyond its delta on the worse side), or a probe regresses;
  inconclusive  when the proxy loss's interval straddles its delta (remedies/quality.py);
  not testable at this scale  when the proxy cannot judge its quality (remedies/quality.py);
  needs a GPU   when an expected measurement could not run on this device (FlexAttention's backward);
  not measured  when its results are not stored yet.
Speed measured on this CPU is compared with the drift of the same step timed twice: a change within it
is shown as such, not as an effect.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..build.builder import realisation_problems
from ..catalog.declared.flops import TRAIN_STEP_CAUSAL
from ..catalog.declared.forecast import GPU_MFU_CEILING, GPU_PEAK, GPU_STEP_PREDICTED
from ..catalog.declared.kernels import ELIGIBLE_TRAIN
from ..catalog.declared.memory import (
    CACHE_OBJECT,
    KV_CACHE_SIZE,
    PEAK_DECODE_CACHED,
    PEAK_PREFILL,
    PEAK_TRAIN,
    PEAK_TRAIN_PART,
)
from ..catalog.declared.params import PARAMS
from ..catalog.declared.probes import PROBES, probe_key
from ..catalog.declared.speed import (
    DECODE_CACHED_TOKENS_PER_S,
    PREFILL_TOKENS_PER_S,
    TRAIN_STEP_REPEAT_DIFF,
    TRAIN_TOKENS_PER_S,
)
from ..catalog.declared.training import VAL_LOSS_FINAL
from ..catalog.labels import Breakdown, Case
from ..catalog.metrics import OWNERS, lookup
from ..catalog.vocabulary import Cause, Method, ProbeOutcome, Status
from ..claims.evidence import compare
from ..claims.stats import Effect, exact
from ..results.query import Results, Value
from ..results.records import Record
from ..study.remedies import Expect, Remedy
from ..study.schema import ModelConfig, Study, Variant, physical_problems
from .outcomes import (
    FAILS,
    INCONCLUSIVE,
    NEEDS_A_GPU,
    NOT_MEASURED,
    PASSES,
    Change,
    Outcome,
    Recommendation,
    RemedyStatus,
)
from .quality import no_worse, purpose_caveats

# The metrics every remedy is read on (the ones it may touch): metric, method, labels, per length.
TOUCHED: tuple[tuple[str, str | None, dict[str, Any]], ...] = (
    (PARAMS, Method.COUNTER, {"component": Breakdown.TOTAL}),
    (PARAMS, Method.COUNTER, {"component": "attention"}),
    (TRAIN_STEP_CAUSAL, Method.COUNTER, {"component": Breakdown.TOTAL}),
    (PEAK_TRAIN, Method.SIMULATED, {"category": Breakdown.TOTAL}),
    (PEAK_TRAIN_PART, Method.SIMULATED, {"part": "alibi_bias"}),
    (PEAK_PREFILL, Method.SIMULATED, {"category": Breakdown.TOTAL}),
    (PEAK_DECODE_CACHED, Method.SIMULATED, {"category": Breakdown.TOTAL}),
    (KV_CACHE_SIZE, Method.CLOSED_FORM, {}),
    (CACHE_OBJECT, Method.SIMULATED, {}),
    (ELIGIBLE_TRAIN, None, {"backend": "flash"}),
    # the forecast on an H100 in bfloat16 (autocast): what a GPU user weighs
    (
        GPU_PEAK,
        Method.PREDICTED,
        {"gpu": "h100-sxm-80gb", "compute": "bfloat16", "step": "train", "category": Breakdown.TOTAL},
    ),
    (GPU_STEP_PREDICTED, Method.PREDICTED, {"gpu": "h100-sxm-80gb", "compute": "bfloat16", "step": "train"}),
    (
        GPU_MFU_CEILING,
        Method.PREDICTED,
        {"gpu": "h100-sxm-80gb", "compute": "bfloat16", "step": "train", "convention": "kernel"},
    ),
    (VAL_LOSS_FINAL, None, {}),
    (TRAIN_TOKENS_PER_S, None, {}),
    (PREFILL_TOKENS_PER_S, None, {}),
    (DECODE_CACHED_TOKENS_PER_S, None, {}),
)
SPEED = {TRAIN_TOKENS_PER_S, PREFILL_TOKENS_PER_S, DECODE_CACHED_TOKENS_PER_S}  # at CPU-scaled lengths
BROKEN = (ProbeOutcome.FAIL, ProbeOutcome.CRASH)  # a probe case that no longer passes


def _batch(study: Study) -> int:
    return min(study.workloads.batch_sizes)


def _values(results: Results, metric: str, method: str | None, labels: dict, variant: str, batch: int):
    found = results.values(metric, method=method, variant=variant, **labels)
    return [v for v in found if v.batch in (None, batch)]


def _pair(before: Value, after: Value) -> Effect:
    if before.samples and after.samples:
        return compare([after, before], [1.0, -1.0])
    return exact(after.value - before.value)


def _drift(results: Results, v: Value) -> float | None:
    """The drift of the same training step timed twice on the value's device (speed metrics), if stored."""
    if v.metric not in SPEED:
        return None
    found = [x.value for x in results.values(TRAIN_STEP_REPEAT_DIFF, device=v.device)]
    return max(found) if found else None


def changes(results: Results, study: Study, before_id: str, after_id: str) -> list[Change]:
    """Every touched metric that both variants have, point by point."""
    out = []
    lengths = set(study.workloads.seq_lens)
    for metric, method, labels in TOUCHED:
        b = _values(results, metric, method, labels, before_id, _batch(study))
        a = _values(results, metric, method, labels, after_id, _batch(study))
        if metric not in SPEED:  # the study's lengths (memory_measured's small CPU workload is its own check)
            b, a = ([v for v in vs if v.seq_len is None or v.seq_len in lengths] for vs in (b, a))
        if metric == VAL_LOSS_FINAL:  # its tokens and flops labels differ by variant: one value each
            b, a = b[:1], a[:1]
            pairs = [(b[0], a[0])] if a and b else []
        else:
            key = lambda v: (v.seq_len, tuple(sorted((k, str(x)) for k, x in v.labels.items())))  # noqa: E731
            by = {key(v): v for v in b}
            pairs = [(by[key(v)], v) for v in a if key(v) in by]
        for bv, av in sorted(pairs, key=lambda p: p[1].seq_len or 0):
            if bv.value is None or av.value is None:
                continue
            out.append(
                Change(
                    metric,
                    lookup(metric).unit,
                    av.method,
                    dict(av.labels),
                    av.seq_len,
                    bv.value,
                    av.value,
                    av.scale,
                    _pair(bv, av),
                    (bv, av),
                    _drift(results, av),
                )
            )
    return out


def probes(results: Results, variant: str) -> dict[str, str]:
    out = {}
    for probe in PROBES:
        for v in results.values(probe, variant=variant, status=None):
            case = v.get("case")
            name = probe_key(probe, case)
            if v.status != Status.OK:
                out[name] = v.status
            else:
                out[name] = str(v.get("outcome"))
    return out


def short(text: str, limit: int = 160) -> str:
    """`text`, cut at the last word that ends within `limit` characters, with an ellipsis where it was cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."


def _skipped(results: Results, variant: str, metric: str, labels: dict[str, Any]) -> Value | None:
    """The skipped record of `metric` at `labels` for `variant`: its note says why, its cause is typed."""
    for v in results.values(metric, variant=variant, status=Status.SKIPPED):
        if all(str(v.labels.get(k)) == str(x) for k, x in labels.items()):
            return v
    return None


def _failure(results: Results, variant: str, metric: str) -> Record | None:
    """The error record of the measurement that owns `metric` for `variant`, if it could not run it."""
    owners = OWNERS.get(metric, ())
    for r in results.records(status=Status.ERROR):
        if r.variant_id == variant and r.measurement in owners and (not r.metric or r.metric == metric):
            return r
    return None


# The remedy's status word for an expectation whose record says why it holds no value (its cause)
_WORD = {Cause.NOT_TESTABLE: RemedyStatus.NOT_TESTABLE, Cause.NEEDS_GPU: NEEDS_A_GPU}


def _check(
    e: Expect,
    found: list[Change],
    after: dict[str, str],
    results: Results,
    study: Study,
    vid: str,
    remedy: Remedy | None = None,
) -> tuple[bool | None, str, str]:
    """(met: True / False / None when unknown, reason, status word for an unknown quality gate)."""
    label = _label(e.metric, e.labels)
    if e.direction == "pass":
        case = e.labels.get("case", Case.AS_BUILT)
        got = after.get(probe_key(e.metric, case))
        if got is None:
            return None, f"{label}: not measured", ""
        return got == ProbeOutcome.PASS, f"{label}: {got} after the change", ""
    rows = [
        c
        for c in found
        if c.metric == e.metric
        and all(str(c.labels.get(k)) == str(v) for k, v in e.labels.items())
        and (e.method is None or c.method == e.method)
    ]
    if not rows:
        skipped = results.values(e.metric, variant=vid, status=Status.SKIPPED)
        if skipped:  # the measurement said why it did not run this (a change the proxy cannot judge)
            return None, f"{label}: {skipped[0].note}", _WORD.get(skipped[0].cause, "")
        failed = _failure(results, vid, e.metric)
        if failed is not None and failed.cause == Cause.NEEDS_GPU:
            return None, f"{label}: needs a GPU ({short(failed.note)})", NEEDS_A_GPU
        why = failed.note if failed is not None else ""
        return None, f"{label}: not measured" + (f" ({short(why)})" if why else ""), ""
    if e.direction == "no_worse":
        c = rows[0]
        return no_worse(e, label, c.effect, c.unit, c.arms, results, study)
    sign = -1 if e.direction == "lower" else 1
    bad = [c for c in rows if sign * (c.after - c.before) <= 0]
    if bad:
        c = bad[0]
        at = f" at {c.seq_len} tokens" if c.seq_len else ""
        return False, f"{label}: {c.before:.4g} -> {c.after:.4g}{at}, not {e.direction}", ""
    return True, f"{label}: {e.direction} at every point ({len(rows)})", ""


def _status(checks: list[tuple[bool | None, str, str]], regressed: list[str], gpu: list[str]) -> str:
    if any(met is False for met, _, _ in checks) or regressed:
        return FAILS
    if all(met for met, _, _ in checks):
        return PASSES
    words = {word for met, _, word in checks if met is None}
    for word in (RemedyStatus.NOT_TESTABLE, INCONCLUSIVE):
        if word in words:
            return word
    return NEEDS_A_GPU if gpu else NOT_MEASURED


def outcome(
    results: Results, study: Study, remedy: Remedy, purposes: dict[str, Any] | None = None
) -> Outcome:
    found = changes(results, study, remedy.applies_to, remedy.variant_id)
    after, before = probes(results, remedy.variant_id), probes(results, remedy.applies_to)
    checks = [_check(e, found, after, results, study, remedy.variant_id, remedy) for e in remedy.expects]
    reasons = [why for _, why, _ in checks]
    regressed = [p for p, got in after.items() if before.get(p) == ProbeOutcome.PASS and got in BROKEN]
    reasons += [f"probe {p} passed before and fails after" for p in regressed]
    gpu = [why for met, why, word in checks if met is None and word == NEEDS_A_GPU]
    expected = {e.metric for e in remedy.expects}
    gpu += _unmeasured_on_this_device(results, remedy.variant_id, {c.metric for c in found} | expected)
    caveats = purpose_caveats(remedy.values, study.base_variant.config, purposes or {})
    return Outcome(
        remedy.id,
        remedy.applies_to,
        remedy.variant_id,
        _status(checks, regressed, gpu),
        reasons,
        found,
        after,
        before,
        remedy,
        gpu,
        caveats,
    )


def _label(metric: str, labels: dict[str, Any]) -> str:
    return metric + "".join(f"[{k}={v}]" for k, v in labels.items())


def _unmeasured_on_this_device(results: Results, vid: str, have: set[str]) -> list[str]:
    """The touched metrics the variant lacks (beyond `have`: those found or expected) because this
    device cannot run them, so a remedy says every measurement that needs a GPU."""
    out = []
    for metric, _, labels in TOUCHED:
        if metric in have:
            continue
        found = _failure(results, vid, metric) or _skipped(results, vid, metric, labels)
        if found is not None and found.cause == Cause.NEEDS_GPU:
            out.append(f"{_label(metric, labels)}: needs a GPU ({short(found.note)})")
            have = have | {metric}
    return out


def _incompatible(cfg: ModelConfig) -> list[str]:
    """What the builder would refuse: the physical problems, and its own rules for the flags orca-analysis
    realises (build/builder.py realisation_problems, the rules it builds by)."""
    return physical_problems(cfg) + realisation_problems(cfg)


def _combined(study: Study, values: dict[tuple[str, str], Any]) -> Variant:
    """The recommended variant; where one remedy alone makes the same model, that remedy's variant
    (one model is measured and stored once), asked for every measurement of the study."""
    config = study.base_variant.config.with_values(values)
    same = next((v for v in study.remedy_variants() if v.config == config), None)
    return dataclasses.replace(same, only=()) if same else study.recommended_variant(values)


def recommendation(results: Results, study: Study, purposes: dict[str, Any] | None = None) -> Recommendation:
    """In catalogue order, the first remedy of each group that passes and changes the base, unless its
    change conflicts with those already taken; then the combined variant, measured when stored, and held
    to the quality gates of the remedies taken. `purposes`: flag -> (claim id, claim, verdict) of the
    claims that say what a flag is for, so a change that removes one says what it gives up."""
    outcomes = [outcome(results, study, r, purposes) for r in study.fixes]
    base = study.base_variant
    values: dict[tuple[str, str], Any] = {}
    change: dict[str, Any] = {}
    taken, skipped, groups = [], [], set()
    for o in outcomes:
        r = o.remedy
        group = r.group or r.id
        if r.applies_to != base.variant_id:
            skipped.append((r.id, f"it changes the variant {r.applies_to}, not the base"))
        elif group in groups:
            skipped.append((r.id, f"another remedy of group '{group}' is taken"))
        elif o.status != PASSES:
            skipped.append((r.id, o.status))
        else:
            clash = [k[1] for k, v in r.values.items() if k in values and values[k] != v]
            merged = {**values, **r.values}
            problems = (
                clash
                and [f"it sets {', '.join(clash)} otherwise"]
                or _incompatible(base.config.with_values(merged))
            )
            if problems:
                skipped.append((r.id, f"conflicts with the remedies taken: {problems[0]}"))
                continue
            values, change = merged, {**change, **r.change}
            taken.append(r.id)
            groups.add(group)
    variant = _combined(study, values) if values else None
    rec = Recommendation(values, change, taken, skipped, variant, outcomes)
    vid = variant.variant_id if variant else ""
    if vid and any(row.record.variant_id == vid and row.record.status == Status.OK for row in results.rows):
        rec.measured = _measured(results, study, vid, [o for o in outcomes if o.id in taken], purposes)
    return rec


def _measured(
    results: Results, study: Study, vid: str, taken: list[Outcome], purposes: dict | None
) -> Outcome:
    """The combined design against the base: its probes, and the quality gates of the remedies taken."""
    base = study.base_variant
    found = changes(results, study, base.variant_id, vid)
    after, before = probes(results, vid), probes(results, base.variant_id)
    gates = {(e.metric, e.delta): e for o in taken for e in o.remedy.expects if e.direction == "no_worse"}
    checks = [_check(e, found, after, results, study, vid) for e in gates.values()]
    failing = [p for p, got in after.items() if got in BROKEN]
    reasons = [why for _, why, _ in checks] + [f"probe {p} fails on the combined design" for p in failing]
    values = {k: v for o in taken for k, v in o.remedy.values.items()}
    return Outcome(
        "recommended",
        base.variant_id,
        vid,
        _status(checks, failing, []),
        reasons,
        found,
        after,
        before,
        caveats=purpose_caveats(values, base.config, purposes or {}),
    )
