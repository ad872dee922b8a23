"""The "Recommended changes" part of the report, and recommendations.json: typed views of
remedies/recommend.py's outcomes (numbers formatted here, never computed); the JSON is plain dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

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
from ..catalog.declared.speed import DECODE_CACHED_TOKENS_PER_S, PREFILL_TOKENS_PER_S, TRAIN_TOKENS_PER_S
from ..catalog.declared.training import VAL_LOSS_FINAL
from ..catalog.vocabulary import Method
from ..kit.format import mib, si
from ..remedies.outcomes import PASSES, STATUSES, Change, Outcome, Recommendation
from ..remedies.recommend import SPEED, recommendation
from ..results.query import Results
from ..study.schema import Study

METHOD_WORDS = {
    Method.COUNTER: "operator counter",
    Method.SIMULATED: "simulated (fake tensors, no allocation)",
    Method.CLOSED_FORM: "closed form",
    Method.MEASURED: "measured",
    Method.MEASURED_MEDIAN: "measured (median)",
    Method.FORCED_SDPA_KERNEL: "forced kernel",
    Method.PREDICTED: "forecast (no GPU): see On a GPU (predicted)",
}
SHORT = {
    PARAMS: "parameters",
    TRAIN_STEP_CAUSAL: "training-step FLOPs (causal-aware)",
    PEAK_TRAIN: "training-step peak",
    PEAK_TRAIN_PART: "ALiBi tensors at that peak",
    PEAK_PREFILL: "prefill peak",
    PEAK_DECODE_CACHED: "cached-decode peak",
    KV_CACHE_SIZE: "KV cache (closed form)",
    CACHE_OBJECT: "cache object",
    ELIGIBLE_TRAIN: "FlashAttention eligible (training)",
    VAL_LOSS_FINAL: "proxy validation loss",
    TRAIN_TOKENS_PER_S: "training tokens/s",
    PREFILL_TOKENS_PER_S: "prefill tokens/s",
    DECODE_CACHED_TOKENS_PER_S: "cached decode tokens/s",
    GPU_PEAK: "GPU training-step peak",
    GPU_STEP_PREDICTED: "GPU training step, predicted",
    GPU_MFU_CEILING: "GPU MFU ceiling",
}


def value_text(x: float, unit: str) -> str:
    if unit == "bytes":
        return mib(x)
    if unit in ("FLOP", "tokens/s", "params"):
        return si(x, {"params": ""}.get(unit, unit))
    if unit == "flag":
        return "yes" if x else "no"
    if unit == "fraction":
        return f"{x:.1%}"
    return f"{x:.4g} {unit}"


def _delta(c: Change) -> str:
    if c.unit == "flag":
        return ""
    if c.drift is not None and not c.moved:
        return f"within the ±{c.drift:.1%} drift of a repeated timing"
    if not c.effect.exact:
        return c.effect.text(c.unit, 3)
    if c.before:
        return f"{(c.after - c.before) / abs(c.before) * 100:+.1f}%"
    return f"{c.after - c.before:+.4g}"


def _name(c: Change) -> str:
    extra = ", ".join(
        f"{k} {v}"
        for k, v in c.labels.items()
        if k not in ("category", "component", "backend", "tokens", "flops", "step")
    )
    name = SHORT.get(c.metric, c.metric)
    if c.labels.get("component") not in (None, "total"):
        name += f" ({c.labels['component']})"
    return name + (f" ({extra})" if extra else "")


def change_rows(changes: list[Change], every: bool = False) -> list[list[str]]:
    """Rows of what moved (`every`: of every metric read, unchanged ones too), at the study's lengths
    (analytic) or without one (proxy losses); speed measured at CPU lengths is in `speed_rows`."""
    return [
        [
            _name(c),
            str(c.seq_len or "-"),
            value_text(c.before, c.unit),
            value_text(c.after, c.unit),
            _delta(c),
            f"{METHOD_WORDS.get(c.method, c.method)}; {c.scale}",
        ]
        for c in changes
        if c.metric not in SPEED and (every or c.moved or c.metric in (VAL_LOSS_FINAL, ELIGIBLE_TRAIN))
    ]


def speed_rows(changes: list[Change]) -> list[list[str]]:
    """Speed measured on this device at its own (CPU-scaled) lengths, each change set against the drift of
    the same step timed twice: a change within it is said to be, not shown as an effect."""
    return [
        [
            _name(c),
            str(c.seq_len or "-"),
            value_text(c.before, c.unit),
            value_text(c.after, c.unit),
            _delta(c),
            f"{METHOD_WORDS.get(c.method, c.method)} on {c.arms[1].device if c.arms else '?'}",
        ]
        for c in changes
        if c.metric in SPEED
    ]


CHANGE_COLUMNS = ["metric", "tokens (study length)", "before", "after", "change", "method; scale"]
SPEED_COLUMNS = ["metric", "tokens (measured length)", "before", "after", "change", "method"]


def _probe_rows(o: Outcome) -> list[list[str]]:
    return [[p, o.probes_before.get(p, "-"), got] for p, got in o.probes.items()]


@dataclass(frozen=True)
class RemedyView:
    """A remedy, or the recommended design against the base, as the report shows it: its status (and CSS
    class), what it changes and why, its reasons, and its rows of what moved (CHANGE_COLUMNS, SPEED_COLUMNS)
    and of its probes (probe, before, after)."""

    id: str
    status: str
    css: str
    before: str
    after: str
    problem: str
    why: str
    change: str
    finding: str
    reasons: list[str]
    rows: list[list[str]]
    speed_rows: list[list[str]]
    probes: list[list[str]]
    needs_gpu: list[str]  # those its reasons do not say already
    scales: list[str]
    caveats: list[str]

    @classmethod
    def of(cls, o: Outcome, every: bool = False) -> RemedyView:
        r = o.remedy
        return cls(
            o.id,
            o.status,
            o.status.replace(" ", "-"),
            o.before_id,
            o.after_id,
            r.problem if r else "",
            r.why if r else "",
            r.change_text() if r else "",
            r.finding if r else "",
            o.reasons,
            change_rows(o.changes, every),
            speed_rows(o.changes),
            _probe_rows(o),
            [g for g in o.needs_gpu if g not in o.reasons],
            sorted({c.scale for c in o.changes}),
            o.caveats,
        )


@dataclass(frozen=True)
class Headline:
    """A number of the recommended design on the one-screen review: before -> after (change), and where."""

    metric: str
    text: str
    at: str


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    ids: str  # the remedies of that status, comma-separated


@dataclass(frozen=True)
class NotTaken:
    id: str
    why: str


@dataclass(frozen=True)
class RecommendationsView:
    """The remedies, their status counts, the recommended design (what it takes and leaves, its change and its
    measured outcome), and recommendations.json (`json`)."""

    remedies: list[RemedyView]
    passing: list[str]
    status_counts: list[StatusCount]
    taken: list[str]
    skipped: list[NotTaken]
    change: str
    measured: RemedyView | None
    headline: list[Headline]
    study_yaml: str
    json: dict[str, Any]
    columns: list[str]
    speed_columns: list[str]


def study_yaml(study: Study, rec: Recommendation) -> str:
    """The recommended design as a study file to copy: the base with the change, the same workloads."""
    doc = {
        "name": f"{study.name}-recommended",
        "description": f"{study.name} with the recommended changes: {', '.join(rec.taken)}",
        "base": rec.variant.config.as_nested(),
        "workloads": {
            "seq_lens": study.workloads.seq_lens,
            "batch_sizes": study.workloads.batch_sizes,
            "dtype": study.workloads.dtype,
        },
        "measurements": list(study.measurements),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def recommendations_view(
    results: Results, study: Study, purposes: dict[str, tuple[str, str, str]] | None = None
) -> RecommendationsView | None:
    if not study.fixes:
        return None
    rec = recommendation(results, study, purposes)
    measured = rec.measured
    headline = []
    if measured:
        want = (PEAK_TRAIN, PARAMS, TRAIN_STEP_CAUSAL, KV_CACHE_SIZE, VAL_LOSS_FINAL)
        top = max((c.seq_len or 0 for c in measured.changes), default=0)
        for c in measured.changes:
            if (
                c.metric in want
                and (c.seq_len in (None, top))
                and c.labels.get("component", "total") == "total"
            ):
                text = f"{value_text(c.before, c.unit)} → {value_text(c.after, c.unit)} ({_delta(c)})"
                headline.append(Headline(_name(c), text, f"{c.seq_len} tokens" if c.seq_len else ""))
    return RecommendationsView(
        remedies=[RemedyView.of(o) for o in rec.outcomes],
        passing=[o.id for o in rec.outcomes if o.status == PASSES],
        status_counts=[
            StatusCount(st, n, ", ".join(o.id for o in rec.outcomes if o.status == st))
            for st in STATUSES
            if (n := sum(o.status == st for o in rec.outcomes))
        ],
        taken=rec.taken,
        skipped=[NotTaken(i, why) for i, why in rec.skipped],
        change=", ".join(
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in rec.change.items()
        ),
        measured=RemedyView.of(measured, every=True) if measured else None,
        headline=headline,
        study_yaml=study_yaml(study, rec) if rec.variant else "",
        json=recommendations_json(rec, study),
        columns=CHANGE_COLUMNS,
        speed_columns=SPEED_COLUMNS,
    )


def _effects_json(o: Outcome) -> list[dict[str, Any]]:
    return [c.as_json() for c in o.changes]


def recommendations_json(rec: Recommendation, study: Study) -> dict[str, Any]:
    """What the report's section shows, for a team's own gate: before and after in each metric's unit."""
    remedies = [
        {
            "id": o.id,
            "finding": o.remedy.finding,
            "metric": o.remedy.metric,
            "applies_to": o.before_id,
            "change": o.remedy.change,
            "status": o.status,
            "reasons": o.reasons,
            "caveats": o.caveats,
            "expects": [
                {
                    "metric": e.metric,
                    "direction": e.direction,
                    "method": e.method,
                    "labels": e.labels,
                    "delta": e.delta if e.direction == "no_worse" else None,
                }
                for e in o.remedy.expects
            ],
            "effects": _effects_json(o),
            "probes": o.probes,
            "needs_gpu": o.needs_gpu,
        }
        for o in rec.outcomes
    ]
    recommended = None
    if rec.variant is not None:
        m = rec.measured
        recommended = {
            "change": rec.change,
            "taken": rec.taken,
            "skipped": [{"id": i, "why": why} for i, why in rec.skipped],
            "status": m.status if m else "not measured yet",
            "reasons": m.reasons if m else [],
            "caveats": m.caveats if m else [],
            "effects": _effects_json(m) if m else [],
            "probes": m.probes if m else {},
            "study_yaml": study_yaml(study, rec),
        }
    return {"remedies": remedies, "recommended": recommended}
