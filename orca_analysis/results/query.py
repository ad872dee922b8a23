"""The one way to read stored results: declared metrics in, values with their unit, method, device,
scale and samples out.

    from orca_analysis.results.query import load_results
    results = load_results("orca")                       # reports/orca/results.sqlite
    results.frame()                                      # tidy pandas DataFrame: units, labels, provenance
    results.values("peak_train", method="simulated", seq_len=8192, category="total")
    results.number("params", variant="base", method="counter", component="total")

A metric with a `samples` label (a seed, a timing repeat) comes back as one Value per everything
else, its samples in order and its value their mean (seeds) or median (repeats). Naming a metric,
method or label that no measurement declares raises MetricError at once. Rules, findings, sections
and figures read only through this module.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..catalog.metrics import Metric, MetricError, lookup, problems
from ..catalog.vocabulary import Status
from .frame import provenance_of, stored_records

if TYPE_CHECKING:
    import pandas as pd
from ..study.kwargs import did_you_mean
from .records import Provenance, Record
from .store import REPORTS_DIR, StoredUnit

_FILTER_FIELDS = ("method", "variant", "device", "seq_len", "batch", "dtype", "scale", "status")


@dataclass(frozen=True)
class Value:
    """One measured or derived number: a record, or the samples of one (seeds, repeats) together."""

    metric: str
    method: str
    unit: str
    value: float | None
    variant_id: str
    seq_len: int | None
    batch: int | None
    dtype: str
    device: str
    scale: str
    status: str
    note: str
    labels: dict[str, Any]  # without the samples label
    swept: dict[str, Any]
    samples: tuple[float, ...] = ()  # per seed or per repeat; () for a single record
    sample_ids: tuple[Any, ...] = ()  # the seed or repeat of each sample
    device_name: str = ""
    date: str = ""
    cause: str = ""  # Cause (catalog/vocabulary.py): why an error or skipped value is missing, typed

    @property
    def n(self) -> int:
        return len(self.samples) or (0 if self.value is None else 1)

    @property
    def spread(self) -> float | None:
        """max - min over the samples (None without samples)."""
        return max(self.samples) - min(self.samples) if self.samples else None

    def get(self, label: str, default: Any = None) -> Any:
        return self.labels.get(label, default)


@dataclass
class _Row:
    record: Record
    unit: StoredUnit | None


def _same(have: Any, want: Any) -> bool:
    if isinstance(want, (set, frozenset, list, tuple)):
        return any(_same(have, w) for w in want)
    if have == want:
        return True
    # two plain strs or ints that differ also differ as text: no need to format them (most rows of a query)
    return not (type(have) is type(want) and type(want) in (str, int)) and str(have) == str(want)


@dataclass
class Results:
    """A study's stored results (or any records), read by declared metric."""

    rows: list[_Row] = field(default_factory=list)
    # strict about variants (what `load_results` returns, for a reader's typos): `one` and `number` raise for a
    # variant that none of the rows has; the report's own reads ask for variants not measured yet, and get None
    strict_variants: bool = False

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> Results:
        return cls([_Row(r, None) for r in records])

    @classmethod
    def from_store(cls, study_folder: Path, everything: bool = False) -> Results:
        return cls([_Row(r, u) for r, u in stored_records(study_folder, everything)])

    def __post_init__(self) -> None:
        # the rows of each metric, and of each (metric, variant), in their order: a query asks for one metric
        # and, mostly, one variant, and a report asks thousands of them
        self._by_metric: dict[str, list[_Row]] = {}
        self._by_variant: dict[tuple[str, str], list[_Row]] = {}
        for row in self.rows:
            self._by_metric.setdefault(row.record.metric, []).append(row)
            self._by_variant.setdefault((row.record.metric, str(row.record.variant_id)), []).append(row)

    def only_variants(self, ids: set[str]) -> Results:
        """The results of these variants alone (the sweep's, without a study's remedy variants)."""
        return Results([row for row in self.rows if row.record.variant_id in ids])

    @property
    def empty(self) -> bool:
        return not self.rows

    # -- the query -----------------------------------------------------------------------
    def values(self, metric: str, **where: Any) -> list[Value]:
        """Values of `metric`, filtered by record fields (method, variant, device, seq_len, batch,
        dtype, scale, status: default "ok", None for any) and by its labels (key=value, or a set)."""
        m = lookup(metric)
        labels = {k: v for k, v in where.items() if k not in _FILTER_FIELDS}
        found = problems(metric, where.get("method"), labels)
        if found:
            raise MetricError(found)
        status, variant = where.get("status", "ok"), where.get("variant")
        rows = []
        candidates = (
            self._by_variant.get((metric, variant), [])
            if type(variant) is str  # a plain str matches a variant id exactly when it is the id's text
            else self._by_metric.get(metric, [])
        )
        for row in candidates:
            r = row.record
            fields = {
                "method": r.method,
                "variant": r.variant_id,
                "device": r.device,
                "seq_len": r.seq_len,
                "batch": r.batch,
                "dtype": r.dtype,
                "scale": r.scale,
            }
            if status is not None and not _same(r.status, status):
                continue
            if any(k in where and where[k] is not None and not _same(v, where[k]) for k, v in fields.items()):
                continue
            if any(not _same(r.labels.get(k), v) for k, v in labels.items()):
                continue
            rows.append(row)
        return list(_grouped(m, rows))

    def one(self, metric: str, **where: Any) -> Value | None:
        """The single value matching, None when there is none; more than one is a query error."""
        found = self.values(metric, **where)
        variant = where.get("variant")
        if not found and self.strict_variants and isinstance(variant, str) and variant not in self.variants():
            raise MetricError(
                f"no variant '{variant}' in these results{did_you_mean(variant, sorted(self.variants()))}"
            )
        if len(found) > 1:
            keys = "; ".join(_describe(v) for v in found[:4])
            raise MetricError(f"{metric}: {len(found)} values match {where}, expected one ({keys} ...)")
        return found[0] if found else None

    def number(self, metric: str, **where: Any) -> float | None:
        v = self.one(metric, **where)
        return None if v is None else v.value

    def variants(self) -> set[str]:
        """The variant ids these results hold."""
        return {row.record.variant_id for row in self.rows}

    def records(self, measurement: str | None = None, status: str | None = None) -> list[Record]:
        """Raw records (e.g. the failures of a measurement that could not run at all)."""
        return [
            r.record
            for r in self.rows
            if (measurement is None or r.record.measurement == measurement)
            and (status is None or r.record.status == status)
        ]

    def measured(self) -> set[str]:
        """The measurements with at least one ok record."""
        return {r.record.measurement for r in self.rows if r.record.status == Status.OK}

    def provenance(self) -> list[dict[str, str]]:
        """The provenance of every stored unit the results come from, once each."""
        seen: dict[int, dict[str, str]] = {}
        for row in self.rows:
            if row.unit is not None and row.unit.unit_id not in seen:
                seen[row.unit.unit_id] = provenance_of(row.unit).as_dict()
        return list(seen.values())

    def frame(self) -> pd.DataFrame:
        """Tidy: one row per record with unit, method, device, scale, status, note, its labels (a dict
        column and one `label.<key>` column each), the swept keys and the provenance."""
        import pandas as pd

        out = []
        for row in self.rows:
            r = row.record
            if not r.metric:  # a call that failed before it measured anything: records(status="error") has it
                continue
            prov = provenance_of(row.unit).as_dict() if row.unit is not None else {}
            out.append(
                {
                    "study": r.study,
                    "variant_id": r.variant_id,
                    **r.swept,
                    "measurement": r.measurement,
                    "metric": r.metric,
                    "method": r.method,
                    "value": r.value,
                    "unit": r.unit,
                    "seq_len": r.seq_len,
                    "batch": r.batch,
                    "dtype": r.dtype,
                    "device": r.device,
                    "scale": r.scale,
                    "status": r.status,
                    "note": r.note,
                    "cause": r.cause,
                    "labels": r.labels,
                    **{f"label.{k}": v for k, v in r.labels.items()},
                    **prov,
                }
            )
        frame = pd.DataFrame(out)
        labels = sorted(c for c in frame.columns if c.startswith("label."))
        prov = [c for c in Provenance.__dataclass_fields__ if c in frame.columns]
        rest = [c for c in frame.columns if c not in labels and c not in prov]
        return frame[[*rest, *labels, *prov]]


def _describe(v: Value) -> str:
    return f"{v.variant_id} {v.method} {v.device} seq_len={v.seq_len} {v.labels}"


def _grouped(m: Metric, rows: list[_Row]) -> Iterator[Value]:
    groups: dict[tuple, list[_Row]] = {}
    for row in rows:
        r = row.record
        labels = tuple((k, str(v)) for k, v in r.labels.items() if k != m.samples)
        key = (r.variant_id, r.method, r.device, r.dtype, r.seq_len, r.batch, r.scale, r.status, labels)
        groups.setdefault(key, []).append(row)
    for members in groups.values():
        first, unit = members[0].record, members[0].unit
        labels = {k: v for k, v in first.labels.items() if k != m.samples}
        samples: tuple[float, ...] = ()
        ids: tuple[Any, ...] = ()
        value = first.value
        if m.samples is not None:
            members = sorted(members, key=lambda row: _order(row.record.labels.get(m.samples)))
            kept = [row.record for row in members if row.record.value is not None]
            samples = tuple(float(r.value) for r in kept)
            ids = tuple(r.labels.get(m.samples) for r in kept)
            value = _aggregate(m, samples)
        yield Value(
            metric=m.name,
            method=first.method,
            unit=first.unit,
            value=value,
            variant_id=first.variant_id,
            seq_len=first.seq_len,
            batch=first.batch,
            dtype=first.dtype,
            device=first.device,
            scale=first.scale,
            status=first.status,
            note=next((r.record.note for r in members if r.record.note), ""),
            labels=labels,
            swept=first.swept,
            samples=samples,
            sample_ids=ids,
            device_name=unit.device_name if unit is not None else "",
            date=unit.provenance.get("date", "") if unit is not None else "",
            cause=next((r.record.cause for r in members if r.record.cause), ""),
        )


def _order(x: Any) -> tuple:
    return (0, x) if isinstance(x, (int, float)) else (1, str(x))


def _aggregate(m: Metric, samples: tuple[float, ...]) -> float | None:
    if not samples:
        return None
    if m.aggregate == "median":
        return float(statistics.median(samples))  # = numpy's linear-interpolated 50% quantile
    return float(statistics.fmean(samples))


def prefer_device(values: list[Value], points: str | None = None) -> list[Value]:
    """The values of one device, so CPU proxies and GPU full-scale runs never meet in one comparison:
    the device covering the most distinct `points` (a swept key, e.g. the axis), a GPU on ties."""
    devices = {v.device for v in values}
    if len(devices) <= 1:
        return values

    def rank(d: str) -> tuple[int, bool]:
        mine = [v for v in values if v.device == d]
        return (len({v.swept.get(points) for v in mine}) if points else 0, d.startswith("cuda"))

    best = max(sorted(devices), key=rank)
    return [v for v in values if v.device == best]


def load_results(study: str = "orca", reports: Path | str = REPORTS_DIR, everything: bool = False) -> Results:
    """A study's results from `<reports>/<study>/results.sqlite` (what its last run asked for, or
    `everything` stored); `study` may also be the store's path or its folder."""
    path = Path(study)
    if path.name == "results.sqlite" and path.is_file():  # the store itself
        folder = path.parent
    elif path.is_dir() and (path / "results.sqlite").is_file():  # its folder
        folder = path
    else:
        folder = Path(reports) / study
    return dataclasses.replace(Results.from_store(folder, everything), strict_variants=True)
