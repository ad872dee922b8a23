"""The statistics behind a comparative verdict: an effect, its 95% interval, and the decision against a
minimal effect of interest (delta).

An effect is a linear contrast of arm means, sum_i c_i * mean_i (two endpoints: c = (+1, -1); a change
of gains: (+1, -2, +1) ...), signed so that positive is what the claim says happens.

Paired (the default wherever the arms share seeds): runs of one seed share their data order, their
evaluation windows and the initial values of the parameters the arms have in common (common random
numbers), so the contrast is taken seed by seed, d_k = sum_i c_i x_ik, and its interval is the paired
(one-sample) t on the d_k: se = sd(d) / sqrt(n), df = n - 1 (Student 1908; for NLP, Dror et al. 2018,
"The Hitchhiker's Guide to Testing Statistical Significance in NLP"). A contrast of repeated measures
(one model scored at several lengths) is the same: each seed's models give one d_k.

Unpaired (arms that share no seeds, or values that carry no seed ids): Welch's interval,
se^2 = sum_i c_i^2 s_i^2 / n_i, with Welch-Satterthwaite degrees of freedom
df = se^4 / sum_i (c_i^2 s_i^2 / n_i)^2 / (n_i - 1) (Welch 1947, Biometrika 34; Satterthwaite 1946).
The effect says why it is not paired.

A group with one sample has no variance: then no interval exists and the verdict cannot be supported
or contradicted by it. Exact evidence (a count, a formula) has no interval.

The minimal detectable effect (MDE) of an interval is the true effect a test of its se and df would
find at 5% two-sided with 80% power: (t_0.975,df + t_0.80,df) * se (Cohen 1988, ch. 2).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..catalog.vocabulary import Verdict

LEVEL = 0.95
POWER = 0.80
EXACT, PAIRED, UNPAIRED = "exact", "paired", "unpaired"  # the kinds of an effect's interval


@dataclass(frozen=True)
class Effect:
    estimate: float  # in the claim's direction: positive means what the claim says happens
    ci_low: float | None  # None: exact evidence, or too few samples for an interval
    ci_high: float | None
    n: int  # seeds paired, or samples in the smallest group; 1 for exact evidence
    method: str  # "exact", or how the interval was made ("paired t, 95%, df 2, 3 seeds")
    kind: str = EXACT  # exact | paired | unpaired
    why_unpaired: str = ""  # for an unpaired interval: why the arms could not be paired
    se: float | None = None  # standard error of the estimate
    df: float | None = None  # degrees of freedom of its t quantile

    @property
    def exact(self) -> bool:
        return self.kind == EXACT

    @property
    def mde(self) -> float | None:
        """The minimal detectable effect at this se and df (5% two-sided, 80% power)."""
        if self.se is None or not self.df:
            return None
        from scipy.stats import t  # imported here: only the claims need it

        return float(t.ppf(0.5 + LEVEL / 2, self.df) + t.ppf(POWER, self.df)) * self.se

    def text(self, unit: str, digits: int = 3) -> str:
        if self.ci_low is None:
            return f"{self.estimate:+.{digits}g} {unit} ({self.method}, n={self.n})"
        return (
            f"{self.estimate:+.{digits}f} {unit}, 95% CI [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}] "
            f"({self.method}{'' if self.kind == PAIRED else f', n={self.n}'})"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n": self.n,
            "interval": self.method,
            "paired": self.kind == PAIRED if not self.exact else None,
            "why_unpaired": self.why_unpaired or None,
            "mde": self.mde,
        }


def exact(estimate: float) -> Effect:
    return Effect(float(estimate), None, None, 1, "exact")


def _t(df: float) -> float:
    from scipy.stats import t  # imported here: only the claims need it

    return float(t.ppf(0.5 + LEVEL / 2, df))


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float], why: str = "") -> Effect:
    """sum_i w_i mean(group_i), with Welch's interval (None when a group has fewer than 2 samples);
    `why`: why the groups are not paired (said with the interval)."""
    means = [statistics.fmean(g) for g in groups]
    estimate = sum(w * m for w, m in zip(weights, means, strict=True))
    n = min(len(g) for g in groups)
    if n < 2:
        return Effect(estimate, None, None, n, "one sample per group: no interval", UNPAIRED, why)
    parts = [w * w * statistics.variance(g) / len(g) for w, g in zip(weights, groups, strict=True)]
    se2 = sum(parts)
    said = f"Welch t (unpaired{': ' + why if why else ''}), {LEVEL:.0%}"
    if se2 == 0:
        return Effect(estimate, estimate, estimate, n, f"{said}: no variance", UNPAIRED, why, 0.0)
    df = se2**2 / sum(p * p / (len(g) - 1) for p, g in zip(parts, groups, strict=True) if p > 0)
    half = _t(df) * math.sqrt(se2)
    return Effect(
        estimate,
        estimate - half,
        estimate + half,
        n,
        f"{said}, df {df:.1f}",
        UNPAIRED,
        why,
        math.sqrt(se2),
        df,
    )


def paired_t(diffs: Sequence[float]) -> Effect:
    """The mean of per-seed differences (already in the claim's direction) with its paired t interval."""
    n = len(diffs)
    estimate = statistics.fmean(diffs) if diffs else float("nan")
    if n < 2:
        return Effect(estimate, None, None, n, "one seed: no interval", PAIRED)
    se = statistics.stdev(diffs) / math.sqrt(n)
    said = f"paired t, {LEVEL:.0%}, df {n - 1}, {n} seeds"
    if se == 0:
        return Effect(estimate, estimate, estimate, n, f"{said}: no variance", PAIRED, "", 0.0, n - 1)
    half = _t(n - 1) * se
    return Effect(estimate, estimate - half, estimate + half, n, said, PAIRED, "", se, n - 1)


def paired(arms: Sequence[Mapping[Any, float]], weights: Sequence[float]) -> Effect:
    """sum_i w_i x_i, seed by seed over the seeds every arm has (each arm: seed -> value), with the paired
    t interval; Welch's over all samples, saying why, when the arms share fewer than 2 seeds."""
    common = set(arms[0]).intersection(*arms[1:]) if arms else set()
    if len(common) < 2:
        seeds = [sorted(map(str, a)) for a in arms]
        why = f"the arms share {len(common)} seed{'' if len(common) == 1 else 's'} (seeds {seeds})"
        return contrast([list(a.values()) for a in arms], weights, why)
    order = sorted(common, key=lambda s: (str(type(s)), s))
    diffs = [sum(w * a[s] for w, a in zip(weights, arms, strict=True)) for s in order]
    return paired_t(diffs)


def decide(effect: Effect, delta: float, helps: bool = True) -> str:
    """supported: the interval lies beyond +delta; contradicted: it lies below -delta or, for a claim that
    something helps, inside (-delta, +delta); inconclusive: it straddles, or there is no interval. Exact
    evidence: supported beyond delta, else contradicted."""
    if effect.exact:  # a count or a formula: the effect is there beyond delta, or it is not
        return Verdict.SUPPORTED if effect.estimate > delta else Verdict.CONTRADICTED
    lo, hi = effect.ci_low, effect.ci_high
    if lo is None or hi is None:
        return Verdict.INCONCLUSIVE
    if lo > delta:
        return Verdict.SUPPORTED
    if hi < -delta or (helps and -delta < lo and hi < delta):
        return Verdict.CONTRADICTED
    return Verdict.INCONCLUSIVE


def beyond(effect: Effect | None, delta: float) -> bool:
    """The effect's interval lies beyond +delta (a positive control that shows its power)."""
    return effect is not None and effect.ci_low is not None and effect.ci_low > delta
