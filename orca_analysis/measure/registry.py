"""The registry of measurements: each measure module registers itself by name.

A study lists names under `measurements:`; `run` calls `fn(variant, study)` for each;
`inspect` adds `summary(config, seq_len, batch)` under the measurement's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..results.records import Record
from ..study.schema import ModelConfig, Study, Variant

MeasureFn = Callable[[Variant, Study], list[Record]]
SummaryFn = Callable[[ModelConfig, int, int], dict[str, Any]]


@dataclass(frozen=True)
class Measurement:
    name: str
    description: str
    fn: MeasureFn
    summary: SummaryFn | None = None  # for `inspect`: a JSON-able dict
    summary_text: Callable[[dict[str, Any]], str] | None = None  # for `inspect` without --json
    isolated: bool = False  # True when a previous measurement in the same process could distort it
    gpu: bool = False  # asks the Ray executor for one GPU
    per_workload: bool = (
        True  # False: one call per variant covers every workload (its records have no seq_len)
    )
    uses_corpus: bool = False  # its results depend on the training corpus: stored per corpus
    # Bumped when the records it writes change (new metrics, another method): stored results of an
    # older version are then measured anew, and the other measurements' results are kept.
    version: int = 1


MEASUREMENTS: dict[str, Measurement] = {}


def register_measurement(name: str, description: str, **options: Any) -> Callable[[MeasureFn], MeasureFn]:
    def wrap(fn: MeasureFn) -> MeasureFn:
        if name in MEASUREMENTS:
            raise ValueError(f"measurement '{name}' is registered twice")
        MEASUREMENTS[name] = Measurement(name, description, fn, **options)
        return fn

    return wrap
