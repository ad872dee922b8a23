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
