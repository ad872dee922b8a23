"""Declared metrics: what each stored number is, said once, in the catalogue (catalog/declared/).

A metric has a name (unique in the project), a unit, the methods that produce it, the label keys
every one of its records carries (a memory category, a backend, a seed ...), and, where a record is
one repeat of many, the label that numbers the repeats (`samples`: "seed" or "repeat"). The query
(results/query.py), the claims catalogue and the report sections name metrics by these names; an
unknown metric, method or label is an error where it is named, never a silent "n/a".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import OrcaError
from .names import did_you_mean
from .vocabulary import Method, Scale

DIRECTIONS = ("higher", "lower", None)  # which way is better, where one is
AGGREGATES = {"seed": "mean", "repeat": "median"}  # how the samples of a metric make its value
SCALES = tuple(Scale)  # formula/counter/simulation; the model itself; a proxy


class MetricError(OrcaError):
    """A metric, method or label that no measurement declares."""


class Metric(str):
    """A declared metric. It is its name, as a StrEnum member is its value: code names it by the constant
    its declaration binds (`PEAK_TRAIN`, a typo fails at import), and it reads, hashes, stores and compares
    as the name, so records, labels and YAML files keep the plain string."""

    unit: str
    description: str
    methods: tuple[str, ...]
    labels: tuple[str, ...]  # every record of the metric carries exactly these keys
    samples: str | None  # the label numbering repeats ("seed", "repeat"); it is among `labels`
    direction: str | None
    cross_check: str  # what the number is checked against: a formula, another method

    def __new__(
        cls,
        name: str,
        unit: str,
        description: str,
        methods: tuple[str, ...],
        labels: tuple[str, ...] = (),
        samples: str | None = None,
        direction: str | None = None,
        cross_check: str = "",
    ) -> Metric:
        if direction not in DIRECTIONS:
            raise ValueError(f"metric '{name}': direction must be one of {DIRECTIONS}")
        if samples is not None and samples not in labels:
            raise ValueError(f"metric '{name}': samples label '{samples}' is not among its labels")
        if not methods:
            raise ValueError(f"metric '{name}' declares no method")
        unknown = [m for m in methods if m not in Method.__members__.values()]
        if unknown:
            raise ValueError(
                f"metric '{name}': unknown method '{unknown[0]}' (catalog/vocabulary.py declares them)"
            )
        self = super().__new__(cls, name)
        fields = {
            "unit": unit,
            "description": description,
            "methods": tuple(Method(m) for m in methods),
            "labels": tuple(labels),
            "samples": samples,
            "direction": direction,
            "cross_check": cross_check,
        }
        self.__dict__.update(fields)
        return self

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"metric '{self}' is declared once; its '{key}' cannot change")

    def __reduce__(self) -> tuple:
        return Metric, (str(self), *self.declaration()[1:])

    @property
    def name(self) -> str:
        return str(self)

    def declaration(self) -> tuple:
        """Everything declared about the metric, its name first (two declarations of one name compare by this)."""
        d = self.__dict__
        return (
            str(self),
            d["unit"],
            d["description"],
            d["methods"],
            d["labels"],
            d["samples"],
            d["direction"],
            d["cross_check"],
        )

    @property
    def aggregate(self) -> str | None:
        return AGGREGATES.get(self.samples or "")


METRICS: dict[str, Metric] = {}
OWNERS: dict[str, tuple[str, ...]] = {}  # metric -> the measurements that record it


def declare(measurement: str, metrics: Iterable[Metric]) -> None:
    """Register a measurement's metrics; a metric two measurements share must be declared alike."""
    for m in metrics:
        known = METRICS.get(m.name)
        if known is not None and known.declaration() != m.declaration():
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
