"""Declared metrics: what each stored number is, said once, in the catalogue (catalog/declared/).

A metric has a name (unique in the project), a unit, the methods that produce it, the label keys
every one of its records carries (a memory category, a backend, a seed ...), and, where a record is
one repeat of many, the label that numbers the repeats (`samples`: "seed" or "repeat"). The query
(results/query.py), the claims catalogue and the report sections name metrics by these names; an
unknown metric, method or label is an error where it is named, never a silent "n/a".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import OrcaError
from .names import did_you_mean

DIRECTIONS = ("higher", "lower", None)  # which way is better, where one is
AGGREGATES = {"seed": "mean", "repeat": "median"}  # how the samples of a metric make its value
SCALES = ("analytic", "measured", "proxy")  # formula/counter/simulation; the model itself; a proxy


class MetricError(OrcaError):
    """A metric, method or label that no measurement declares."""


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    description: str
    methods: tuple[str, ...]
    labels: tuple[str, ...] = ()  # every record of the metric carries exactly these keys
    samples: str | None = None  # the label numbering repeats ("seed", "repeat"); it is among `labels`
    direction: str | None = None
    cross_check: str = ""  # what the number is checked against: a formula, another method

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric '{self.name}': direction must be one of {DIRECTIONS}")
        if self.samples is not None and self.samples not in self.labels:
            raise ValueError(f"metric '{self.name}': samples label '{self.samples}' is not among its labels")
        if not self.methods:
            raise ValueError(f"metric '{self.name}' declares no method")

    @property
    def aggregate(self) -> str | None:
        return AGGREGATES.get(self.samples or "")


METRICS: dict[str, Metric] = {}
OWNERS: dict[str, tuple[str, ...]] = {}  # metric -> the measurements that record it


def declare(measurement: str, metrics: Iterable[Metric]) -> None:
    """Register a measurement's metrics; a metric two measurements share must be declared alike."""
    for m in metrics:
        known = METRICS.get(m.name)
        if known is not None and known != m:
            raise ValueError(f"metric '{m.name}' is declared twice, differently ({OWNERS[m.name]})")
        METRICS[m.name] = m
        if measurement not in OWNERS.get(m.name, ()):
            OWNERS[m.name] = (*OWNERS.get(m.name, ()), measurement)


def lookup(name: str, where: str = "") -> Metric:
    if name not in METRICS:
        prefix = f"{where}: " if where else ""
        raise MetricError(f"{prefix}unknown metric '{name}'{did_you_mean(name, list(METRICS))}")
    return METRICS[name]


def problems(name: str, method: str | None = None, labels: Iterable[str] = (), where: str = "") -> list[str]:
    """What is wrong with naming `name` (with `method` and these label keys); empty when nothing is."""
    prefix = f"{where}: " if where else ""
    try:
        m = lookup(name)
    except MetricError:
        return [f"{prefix}unknown metric '{name}'{did_you_mean(name, list(METRICS))}"]
    out = []
    if method is not None and method not in m.methods:
        out.append(f"{prefix}metric '{name}' has no method '{method}' (methods: {', '.join(m.methods)})")
    for key in labels:
        if key not in m.labels:
            have = ", ".join(m.labels) or "none"
            out.append(f"{prefix}metric '{name}' has no label '{key}' (labels: {have})")
    return out


def check_record(measurement: str, name: str, method: str, labels: dict[str, Any]) -> None:
    """Raise ValueError when a record does not match its declaration (a bug in the measurement)."""
    found = problems(name, method, labels)
    if found:
        raise ValueError("; ".join(found))
    m = METRICS[name]
    if measurement not in OWNERS[name]:
        raise ValueError(f"metric '{name}' belongs to {', '.join(OWNERS[name])}, not '{measurement}'")
    missing = [k for k in m.labels if k not in labels]
    if missing:
        raise ValueError(f"metric '{name}': record lacks label(s) {', '.join(missing)}")
