"""The statistics behind a comparative verdict: an effect, its 95% interval, and the decision against a
minimal effect of interest (delta).

An effect is a linear contrast of group means, sum_i c_i * mean_i (two endpoints: c = (+1, -1); a
change of gains: (+1, -2, +1) ...), signed so that positive is what the claim says happens. Its interval
is Welch's: se^2 = sum_i c_i^2 s_i^2 / n_i, with Welch-Satterthwaite degrees of freedom
df = se^4 / sum_i (c_i^2 s_i^2 / n_i)^2 / (n_i - 1) and Student's t quantile (Welch 1947, Biometrika 34;
Satterthwaite 1946). A group with one sample has no variance: then no interval exists and the verdict
cannot be supported or contradicted by it. Exact evidence (a count, a formula) has no interval.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Effect:
    estimate: float  # in the claim's direction: positive means what the claim says happens
    ci_low: float | None  # None: exact evidence, or too few samples for an interval
    ci_high: float | None
    n: int  # samples in the smallest group (seeds or repeats); 1 for exact evidence
    method: str  # "exact", or how the interval was made

    @property
    def exact(self) -> bool:
        return self.method == "exact"

    def text(self, unit: str, digits: int = 3) -> str:
        if self.ci_low is None:
            return f"{self.estimate:+.{digits}g} {unit} ({self.method}, n={self.n})"
        return (f"{self.estimate:+.{digits}f} {unit}, 95% CI [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}] "
                f"({self.method}, n={self.n})")  # fmt: skip


def exact(estimate: float) -> Effect:
    return Effect(float(estimate), None, None, 1, "exact")


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float]) -> Effect:
    """sum_i w_i mean(group_i), with Welch's interval (None when a group has fewer than 2 samples)."""
    from scipy.stats import t  # imported here: only the claims need it

    means = [statistics.fmean(g) for g in groups]
    estimate = sum(w * m for w, m in zip(weights, means, strict=True))
    n = min(len(g) for g in groups)
    if n < 2:
        return Effect(estimate, None, None, n, "one sample per group: no interval")
    parts = [w * w * statistics.variance(g) / len(g) for w, g in zip(weights, groups, strict=True)]
    se2 = sum(parts)
    if se2 == 0:
        return Effect(estimate, estimate, estimate, n, f"Welch t, {LEVEL:.0%}: no variance")
    df = se2**2 / sum(p * p / (len(g) - 1) for p, g in zip(parts, groups, strict=True) if p > 0)
    half = float(t.ppf(0.5 + LEVEL / 2, df)) * math.sqrt(se2)
    return Effect(estimate, estimate - half, estimate + half, n, f"Welch t, {LEVEL:.0%}, df {df:.1f}")


def decide(effect: Effect, delta: float, helps: bool = True) -> str:
    """supported: the interval lies beyond +delta; contradicted: it lies below -delta or, for a claim that
    something helps, inside (-delta, +delta); inconclusive: it straddles, or there is no interval. Exact
    evidence: supported beyond delta, else contradicted."""
    if effect.exact:  # a count or a formula: the effect is there beyond delta, or it is not
        return "supported" if effect.estimate > delta else "contradicted"
    lo, hi = effect.ci_low, effect.ci_high
    if lo is None or hi is None:
        return "inconclusive"
    if lo > delta:
        return "supported"
    if hi < -delta or (helps and -delta < lo and hi < delta):
        return "contradicted"
    return "inconclusive"
