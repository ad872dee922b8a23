"""Build a measurement call's records: shared fields filled in, each record checked as it is made.

Every record names a declared metric (catalog/metrics.py) with one of its methods and exactly its
label keys; the unit comes from the declaration, never retyped. A record that does not match its
declaration raises at once: a typo in a measurement fails its tests, not the report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..catalog.metrics import SCALES, check_record, lookup
from ..catalog.vocabulary import Cause, Method, Scale, Status
from ..instruments.timing import Timing
from ..results.records import STATUSES, Record
from ..study.schema import Variant


class Recorder:
    def __init__(
        self,
        study: str,
        variant: Variant,
        measurement: str,
        *,
        records: list[Record] | None = None,
        **defaults: Any,
    ) -> None:
        self.records: list[Record] = [] if records is None else records
        self.study, self.variant, self.measurement = study, variant, measurement
        self.defaults = {"device": "none", "dtype": "", "scale": Scale.ANALYTIC, **defaults}

    def at(self, **defaults: Any) -> Recorder:
        """A recorder writing into the same list, with other shared fields (a workload, a device)."""
        return Recorder(
            self.study, self.variant, self.measurement, records=self.records, **{**self.defaults, **defaults}
        )

    def add(
        self,
        metric: str,
        value: float | None,
        method: str,
        labels: dict[str, Any] | None = None,
        *,
        note: str = "",
        status: str = "ok",
        cause: Cause = Cause.NONE,
        **fields: Any,
    ) -> Record:
        # stored as plain strings: a metric, or a label value that names one, is its name (catalog/metrics.py)
        metric, method, status = str(metric), str(method), str(status)
        labels = {k: str(v) if isinstance(v, str) else v for k, v in (labels or {}).items()}
        check_record(self.measurement, metric, method, labels)
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got '{status}'")
        if not isinstance(cause, Cause) or (cause and status == Status.OK):
            raise ValueError(f"{metric}: cause must be a Cause, and only an error or skipped record has one")
        if status == "ok" and value is None:
            raise ValueError(f"{metric}: an ok record needs a value (else status error or skipped)")
        shared = {**self.defaults, **fields}
        if shared["scale"] not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got '{shared['scale']}'")
        shared["scale"] = str(shared["scale"])
        record = Record(
            study=self.study,
            variant_id=self.variant.variant_id,
            measurement=self.measurement,
            metric=metric,
            method=method,
            value=value,
            unit=lookup(metric).unit,
            status=status,
            note=note,
            cause=str(cause),
            labels=labels,
            swept=self.variant.swept,
            **shared,
        )
        self.records.append(record)
        return record

    def skipped(
        self,
        metric: str,
        method: str,
        why: str,
        labels: dict[str, Any] | None = None,
        cause: Cause = Cause.NONE,
        **f: Any,
    ) -> None:
        self.add(metric, None, method, labels, note=why, status=Status.SKIPPED, cause=cause, **f)

    def failed(
        self,
        metric: str,
        method: str,
        why: str,
        labels: dict[str, Any] | None = None,
        cause: Cause = Cause.NONE,
        **f: Any,
    ) -> None:
        self.add(metric, None, method, labels, note=why[:300], status=Status.ERROR, cause=cause, **f)

    def timing(self, metric: str, timing: Timing, labels: dict[str, Any] | None = None, **f: Any) -> None:
        """Every sample of a timing (seconds per call), one record each, numbered by label `repeat`;
        a noisy timing says so in each sample's note (the median is still the measured value)."""
        for i, seconds in enumerate(timing.times):
            self.add(metric, seconds, Method.MEASURED, {**(labels or {}), "repeat": i}, note=timing.note, **f)

    def rate(
        self, metric: str, timing: Timing, work: float, labels: dict[str, Any] | None = None, **f: Any
    ) -> None:
        """`work` (tokens, FLOP) per median call of a timing; inherits the timing's noise note."""
        self.add(metric, work / timing.median, Method.MEASURED_MEDIAN, labels, note=timing.note, **f)


def with_fields(record: Record, **fields: Any) -> Record:
    return replace(record, **fields)
