"""Statistics over stored values that more than one reader needs, defined once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def growth_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Slope of log y on log x: y ~ x^k (least squares)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def relative_iqr(samples: Sequence[float]) -> float:
    """Inter-quartile range over the median, quartiles linearly interpolated (as instruments/timing.py)."""
    q1, med, q3 = np.quantile(np.asarray(samples, float), [0.25, 0.5, 0.75])
    return float((q3 - q1) / med) if med > 0 else float("inf")


def pareto_front(
    points: Sequence[tuple[float, float]], senses: tuple[str, str] = ("higher", "lower")
) -> list[bool]:
    """Which points no other point dominates: at least as good on both coordinates and better on one.
    `senses` says which way is better on each ("higher" size, "lower" cost: the default)."""
    sign = [1 if s == "higher" else -1 for s in senses]
    scored = [(sign[0] * a, sign[1] * b) for a, b in points]  # now higher is better on both

    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in scored)

    return [not dominated(p) for p in scored]
