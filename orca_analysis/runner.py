"""Run a study: every variant x measurement, records written as each one finishes.

A measurement that fails becomes an `error` record with its one-line reason; the sweep goes on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .errors import OrcaError
from .measure import MEASUREMENTS
from .results import Record, ResultsWriter, current_provenance, study_dir
from .study.schema import Study, Variant


def _failure(variant: Variant, study: Study, measurement: str, exc: BaseException) -> Record:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, OrcaError):
        text = f"{type(exc).__name__}: {text}"
    return Record(
        study=study.name,
        variant_id=variant.variant_id,
        measurement=measurement,
        metric="",
        method="",
        value=None,
        unit="",
        status="error",
        error=text,
        swept=variant.swept,
    )


def run_study(study: Study, out_root: Path | None = None, log=sys.stderr) -> Path:
    """Measure every variant; returns the results file."""
    out = study_dir(study.name, out_root) / "results.csv"
    variants = study.variants()
    swept_keys = list(variants[0].swept) if variants else []
    jobs = [(v, m) for v in variants for m in study.measurements]
    failures = 0
    with ResultsWriter(out, swept_keys, current_provenance()) as writer:
        for i, (variant, name) in enumerate(jobs, 1):
            start = time.perf_counter()
            try:
                records = MEASUREMENTS[name].fn(variant, study)
                status = "ok"
            except KeyboardInterrupt:
                print(f"interrupted: {i - 1} of {len(jobs)} measurements kept in {out}", file=log)
                raise
            except Exception as exc:  # noqa: BLE001  (a failed variant is a result, not a crash)
                records = [_failure(variant, study, name, exc)]
                status = f"failed: {records[0].error}"
                failures += 1
            writer.write(records)
            print(
                f"[{i}/{len(jobs)}] {variant.variant_id}: {name} {status} "
                f"({time.perf_counter() - start:.1f} s)",
                file=log,
                flush=True,
            )
    print(f"{len(jobs) - failures} of {len(jobs)} measurements ok; results in {out}", file=log)
    return out
