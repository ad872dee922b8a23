"""Bring results measured elsewhere (a GPU machine, an older store) into a study's store.

The file is CSV (or Parquet) in the records' columns with their provenance (what `export`, or a
script using `records.columns` and `to_row`, writes). Rows are grouped into units by variant,
measurement and provenance, and keyed like local results: the variant's config (resolved through
the study when the file has no `variant_key`; for a measurement that trains on the corpus, with the
corpus its `corpus_tokens` record names), the workloads, the environment its provenance names.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..catalog.declared import SPECS
from ..catalog.declared.training import CORPUS_TOKENS
from ..catalog.specs import Spec
from ..errors import OrcaError
from ..instruments.corpus import DEFAULT_LABEL, label_of
from ..study import load_study
from ..study.schema import Variant
from .environment import ALL_WORKLOADS, _digest, results_key, variant_key, workload_key
from .legacy import cause_from_note, with_probe_outcome
from .lock import store_lock
from .records import CAUSES, FIXED_COLUMNS, STATUSES, TAIL_COLUMNS, Provenance, Record
from .store import Unit, open_store, study_dir

PROVENANCE = list(Provenance.__dataclass_fields__)
KNOWN = {*FIXED_COLUMNS, *TAIL_COLUMNS, *PROVENANCE, "variant_key", "env_id"}


@dataclass
class ImportSummary:
    store: Path
    records: int
    units: int
    unresolved: list[str]  # variant ids the study does not have (stored, not in the report)


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise OrcaError(f"import file not found: {path}")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path).astype(object)
            return frame.where(frame.notna(), "").astype(str)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except ImportError:
        raise OrcaError("reading parquet needs pyarrow: pip install pyarrow") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise OrcaError(f"{path}: not a readable results file ({str(exc).strip().splitlines()[0]})") from None


def _scalar(text: str) -> Any:
    """A swept value as written: int, float, bool or text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _number(text: str, where: str, whole: bool = False) -> float | int | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise OrcaError(f"{where}: '{text}' is not a number") from None
    if math.isnan(value):
        return None
    if whole and not value.is_integer():
        raise OrcaError(f"{where}: '{text}' is not a whole number")
    return (
        int(value) if whole or (value.is_integer() and "." not in text and "e" not in text.lower()) else value
    )


def _labels(text: str, where: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        labels = json.loads(text)
    except json.JSONDecodeError:
        raise OrcaError(f"{where}: labels '{text[:60]}' are not JSON") from None
    if not isinstance(labels, dict):
        raise OrcaError(f"{where}: labels must be a JSON object, got '{text[:60]}'")
    return labels


def _record(row: dict[str, str], swept_cols: list[str], where: str) -> Record:
    if row["status"] not in STATUSES:
        raise OrcaError(f"{where}: status '{row['status']}' is not one of {', '.join(STATUSES)}")
    text = {k: row[k] for k in ("study", "variant_id", "measurement", "metric", "method", "unit", "dtype")}
    text.update({k: row[k] for k in ("device", "status", "note")})
    if "cause" in row:
        cause = row["cause"]
        if cause not in CAUSES:
            raise OrcaError(f"{where}: cause '{cause}' is not one of {', '.join(c for c in CAUSES if c)}")
    else:  # a file exported before `cause` was a column: its notes' words say it (results/legacy.py)
        cause = cause_from_note(row["status"], row["note"])
    labels = _labels(row.get("labels", ""), where)
    value = _number(row["value"], where)
    labels = with_probe_outcome(row["metric"], row["status"], value, row["note"], labels) or labels
    return Record(
        cause=str(cause),
        **text,
        value=value,
        seq_len=_number(row["seq_len"], where, whole=True),
        batch=_number(row["batch"], where, whole=True),
        scale=row.get("scale") or "analytic",
        labels=labels,
        swept={k: _scalar(row[k]) for k in swept_cols if row[k] != ""},
    )


def _study_variants(study_ref: str | None, study_name: str) -> tuple[dict[str, Variant], str]:
    """variant_id -> variant for the study's current variants and its remedies' (its role is part of the key of
    a measurement that measures remedies less fully), and its dtype."""
    try:
        study = load_study(study_ref or study_name)
    except OrcaError:
        if study_ref:
            raise
        return {}, ""  # e.g. a study file not at hand: keys fall back to id and swept values
    if study.name != study_name:
        raise OrcaError(f"the file holds results of study '{study_name}', not '{study.name}'")
    return {v.variant_id: v for v in study.variants() + study.remedy_variants()}, study.workloads.dtype


def _corpus_label(records: list[Record]) -> str:
    """The corpus a unit trained on, as instruments/corpus.py labels it (no such record: the default)."""
    for r in records:
        if r.metric == CORPUS_TOKENS and r.labels.get("corpus"):
            return label_of(str(r.labels["corpus"]), str(r.labels.get("sha256", "")))
    return DEFAULT_LABEL


def _results_key(variant: Variant, measurement: str, records: list[Record]) -> str:
    """The key `run` stores these results under (results_key, with the measurement's catalogue spec), the
    corpus read off the records."""
    spec = SPECS.get(measurement, Spec(measurement))
    return results_key(
        variant.config, spec, _corpus_label(records) if spec.uses_corpus else None, variant.role
    )


def _missing_columns(path: Path, frame: pd.DataFrame) -> list[str]:
    """The required columns the file lacks; a file an older orca-analysis wrote (schema 1) is refused."""
    if "note" not in frame.columns and "error" in frame.columns:
        raise OrcaError(
            f"{path}: a results file of schema 1 (an older orca-analysis: `error` and `category` "
            "columns, no `note`): measure anew instead"
        )
    return [
        c
        for c in (*FIXED_COLUMNS, *TAIL_COLUMNS, *PROVENANCE)
        if c not in ("scale", "cause") and c not in frame.columns
    ]


def import_results(path: Path, out_root: Path | None = None, study_ref: str | None = None) -> ImportSummary:
    frame = _read(path)
    missing = _missing_columns(path, frame)
    if missing:
        raise OrcaError(f"{path}: not in the records' columns: missing {', '.join(missing)}")
    if frame.empty:
        raise OrcaError(f"{path}: no results in the file")
    studies = sorted(set(frame["study"]))
    if len(studies) != 1 or not studies[0]:
        raise OrcaError(f"{path}: one study per file, found {', '.join(map(repr, studies))}")
    variants, study_dtype = _study_variants(study_ref, studies[0])
    swept_cols = [c for c in frame.columns if c not in KNOWN or c in ("dim", "depth", "heads")]
    # (variant key, measurement, provenance, resolved through the study) -> (row, record)
    groups: dict[tuple[str, str, str, bool], list[tuple[dict[str, str], Record]]] = {}
    unresolved: set[str] = set()
    for i, row in enumerate(frame.to_dict("records")):
        record = _record(row, swept_cols, f"{path} line {i + 2}")
        vkey, variant = row.get("variant_key"), variants.get(record.variant_id)
        if not vkey and variant is not None:
            vkey = variant_key(variant.config)
        elif not vkey:
            unresolved.add(record.variant_id)
            vkey = "unresolved-" + _digest([record.variant_id, record.swept])
        prov = {k: row[k] for k in PROVENANCE}
        resolved = not row.get("variant_key") and variant is not None
        group = (vkey, record.measurement, json.dumps(prov, sort_keys=True), resolved)
        groups.setdefault(group, []).append((row, record))
    units = 0
    folder = study_dir(studies[0], out_root)
    with store_lock(folder, sys.stderr), open_store(folder) as store:  # never beside a running `run`
        for (vkey, name, prov, resolved), rows in groups.items():
            records = [r for _, r in rows]
            if resolved:  # keyed as `run` keys it: by the measurement's version, and the corpus it trained on
                vkey = _results_key(variants[records[0].variant_id], name, records)
            with_workload = [r for r in records if r.seq_len is not None and r.batch is not None]
            workloads = sorted(
                {workload_key(r.seq_len, r.batch, r.dtype or study_dtype) for r in with_workload}
            )
            statuses = {r.status for r in records}
            status = "error" if statuses == {"error"} else "skipped" if statuses == {"skipped"} else "ok"
            unit = Unit(
                vkey,
                records[0].variant_id,
                name,
                tuple(workloads) or (ALL_WORKLOADS,),
                status,
                records[0].note if status != "ok" else "",
                0.0,
                Provenance(**json.loads(prov)),
                f"import:{path.name}",
            )
            store.commit(unit, records)
            units += 1
        return ImportSummary(store.path, len(frame), units, sorted(unresolved))
