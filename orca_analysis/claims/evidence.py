"""What a rule reads: the query over the stored results, the study, the base's fidelity entries;
and the axis series every comparative rule starts from."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from ..catalog.declared.training import NGRAM_VAL_LOSS
from ..catalog.metrics import lookup
from ..catalog.vocabulary import Scale, Status, Verdict
from ..instruments.ngram import READ_ORDER
from ..results.query import Results, Value, prefer_device
from ..study.schema import Study
from .stats import Effect, beyond, contrast, paired

VERDICTS = tuple(Verdict)  # in the report's order


@dataclass(frozen=True)
class Control:
    """A test's positive control: a comparison known to show an effect, which must show it beyond
    `delta` at this budget before the test's result (a null one above all) means anything."""

    name: str  # what it is, e.g. "learned absolute positions: loss rise from 64 to 256 tokens"
    effect: Effect
    delta: float
    unit: str

    @property
    def shows_power(self) -> bool:
        return beyond(self.effect, self.delta)

    def text(self) -> str:
        return f"{self.name} {self.effect.text(self.unit)}, needed beyond {self.delta:g}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.effect.as_json(),
            "delta": self.delta,
            "unit": self.unit,
            "shows_power": self.shows_power,
        }


@dataclass
class Judgement:
    verdict: Verdict
    reason: str  # one or two sentences with the numbers behind the verdict
    evidence: list[dict[str, Any]] = field(default_factory=list)  # rows: {label, value, unit, method}
    anchor: str = ""  # where in the report the evidence lives
    scale: str = ""  # analytic | measured | proxy: what the evidence is of (filled from the values)
    metric: str = ""  # the declared metric the effect is of
    effect: Effect | None = None  # estimate and interval, in the claim's direction
    delta: float | None = None  # the minimal effect of interest, in the metric's unit
    unit: str = ""  # the effect's unit where it is not the metric's (e.g. decades of a ratio)
    control: Control | None = None  # the positive control that shows the test's power, where it has one


@dataclass
class Evidence:
    results: Results
    study: Study
    fidelity: dict[str, dict[str, Any]]  # flag -> fidelity entry of the base

    def on_axis(self, axis: str) -> set[str]:
        """The base and the variants that change only `axis`."""
        base = self.study.base
        return {
            v.variant_id
            for v in self.study.variants()
            if all(val == base.get(k) for k, val in v.swept.items() if k != axis)
        }


@dataclass
class Series:
    """One metric along an axis: axis value -> the value there, and the Values it came from."""

    metric: str
    axis: str
    points: dict[Any, float]
    values: list[Value]
    spread: float = 0.0  # the largest spread over seeds among the points (0 without seeds)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def keys(self) -> list[Any]:
        return list(self.points)

    @property
    def ys(self) -> list[float]:
        return list(self.points.values())

    def rows(self, label: str) -> list[dict[str, Any]]:
        unit = lookup(self.metric).unit
        return [
            {"label": f"{self.axis}={k}", "value": float(v), "unit": unit, "method": label}
            for k, v in self.points.items()
        ]


def axis_series(
    ev: Evidence,
    metric: str,
    axis: str,
    method: str | None = None,
    seq_len: int | None = None,
    labels: dict[str, Any] | None = None,
    last_step: bool = False,
) -> Series:
    """`metric` per value of `axis` over the base and the variants that change only `axis`, on one
    device; at `seq_len` (default: the longest stored) where the metric has workloads; `last_step`
    keeps each variant's values at its latest `step` label."""
    found = [
        v
        for v in ev.results.values(metric, method=method, **(labels or {}))
        if v.variant_id in ev.on_axis(axis)
    ]
    if last_step and found:
        last = {
            vid: max(int(v.get("step")) for v in found if v.variant_id == vid)
            for vid in {v.variant_id for v in found}
        }
        found = [v for v in found if int(v.get("step")) == last[v.variant_id]]
    with_len = [v for v in found if v.seq_len is not None]
    if with_len:
        target = seq_len if seq_len is not None else max(v.seq_len for v in with_len)
        found = [v for v in with_len if v.seq_len == target]
    found = prefer_device(found, axis)
    by_point: dict[Any, list[Value]] = {}
    for v in found:
        if axis in v.swept and v.value is not None:
            by_point.setdefault(v.swept[axis], []).append(v)
    points = {k: float(statistics.median(x.value for x in by_point[k])) for k in sorted(by_point)}
    spread = max((v.spread or 0.0 for v in found), default=0.0)
    return Series(metric, axis, points, found, spread)


def missing(what: str) -> Judgement:
    return Judgement(Verdict.NOT_TESTED, f"no `{what}` results for this axis in the store")


def base_values(ev: Evidence, metric: str, **where: Any) -> list[Value]:
    """The base variant's values of `metric`, of one device (the GPU's full-scale runs where there are any)."""
    base = ev.study.base_variant.variant_id
    return prefer_device(ev.results.values(metric, variant=base, **where))


def scale_of(values: list[Value]) -> str:
    """proxy if any value is of a proxy model, else measured if any was measured, else analytic."""
    scales = {v.scale for v in values}
    return (
        Scale.PROXY
        if Scale.PROXY in scales
        else Scale.MEASURED
        if Scale.MEASURED in scales
        else Scale.ANALYTIC
        if scales
        else ""
    )


def by_seed(v: Value) -> dict[Any, float]:
    """seed -> sample of a value whose samples are seeds ({} otherwise: timing repeats pair nothing)."""
    if not v.sample_ids or lookup(v.metric).samples != "seed":
        return {}
    return dict(zip(v.sample_ids, v.samples, strict=True))


def compare(values: list[Value], weights: list[float]) -> Effect:
    """sum_i w_i value_i: paired by seed (common random numbers) where every value carries its seeds,
    else Welch's interval over the samples, saying why."""
    arms = [by_seed(v) for v in values]
    if all(arms):
        return paired(arms, weights)
    kinds = sorted({lookup(v.metric).samples or "single values" for v in values})
    why = (
        "timing repeats share no random numbers" if kinds == ["repeat"] else f"samples are {', '.join(kinds)}"
    )
    return contrast([samples(v) for v in values], weights, why)


def samples(v: Value) -> list[float]:
    """The per-seed (or per-repeat) samples of a value, or the value itself."""
    return list(v.samples) if v.samples else [float(v.value)]


PROXY = (
    "proxy scale (small models trained on a CPU by the proxy rule of the training section, not the "
    "model itself): "
)


def initial_fall(ev: Evidence, arms: dict[str, Value]) -> str:
    """Why the comparison of these arms cannot be read yet, or "" when it can. The read criterion: every
    arm's mean held-out loss lies below that of a bigram count model of the same tokens (`ngram_val_loss`,
    order 2, the same device's tokens): the model predicts from more than the previous token, so the
    comparison is past the initial fall, where it measures how fast a model starts. Without a stored
    reference (results from before it was recorded) the criterion is not checked."""
    late, refs = [], ev.results.values(NGRAM_VAL_LOSS, order=READ_ORDER)
    for name, v in arms.items():
        ref = next((r.value for r in refs if r.device == v.device), None)
        if ref is not None and v.value is not None and v.value >= ref:
            late.append(f"{name} {v.value:.3f} (bigram {ref:.3f})")
    if not late:
        return ""
    return (
        f"not past the initial fall: {', '.join(late)} nats/token, not below the loss of a bigram count "
        "model of the same tokens (the read criterion)"
    )


def unpowered(ev: Evidence, metric: str, variants: set[str] | None = None) -> str:
    """The reason stored with the skipped records of `metric` (a test the run's quality tier does not
    power, or a run cut short), or "" when there are none."""
    found = [
        v
        for v in ev.results.values(metric, status=Status.SKIPPED)
        if variants is None or v.variant_id in variants
    ]
    return found[0].note if found else ""
