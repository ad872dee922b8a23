"""Tidy result records: one row per measured value, with its method, unit, labels and provenance.

`status` is the run's outcome only (ok, error, skipped); a probe that fails is an ok record whose
value says so. `note` carries the why of an error or a skip, or a caveat on an ok value, in words;
`cause` (catalog/vocabulary.py Cause) is that why where code acts on it, typed. `labels`
are the declared label keys of the metric (catalog/metrics.py), stored as JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from ..catalog.version import VERSION
from ..catalog.vocabulary import Cause, Status

STATUSES = tuple(Status)
CAUSES = tuple(Cause)


@dataclass
class Record:
    study: str
    variant_id: str
    measurement: str  # the module that measured it: "params", "flops", ...
    metric: str  # what was measured: "total", "attention", ...
    method: str  # how: "counter", "closed_form", ...
    value: float | None
    unit: str
    seq_len: int | None = None  # None where the value does not depend on the workload
    batch: int | None = None
    dtype: str = ""
    device: str = "cpu"
    scale: str = "analytic"  # analytic (formula, counter, simulation), measured (the model), proxy
    status: str = "ok"
    note: str = ""
    cause: str = ""  # Cause: why an error or skipped record holds no value, where code acts on it
    labels: dict[str, Any] = field(default_factory=dict)  # the metric's declared label keys
    swept: dict[str, Any] = field(default_factory=dict)  # dim, depth, heads and every swept flag


@dataclass(frozen=True)
class Provenance:
    orca_analysis: str
    torch: str
    x_transformers: str
    python: str
    device_name: str
    date: str
    git_commit: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        if name == "orca-analysis":  # run from a source tree on PYTHONPATH (the GPU machine): no metadata
            return VERSION
        return "not installed"


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"


@cache
def git_commit() -> str:
    """HEAD of the checkout, else $ORCA_GIT_COMMIT (a copied tree without .git), else "unknown"."""
    stamped = os.environ.get("ORCA_GIT_COMMIT", "").strip()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or stamped or "unknown"
    except (OSError, subprocess.SubprocessError):
        return stamped or "unknown"


def current_provenance(device: str = "cpu") -> Provenance:
    return Provenance(
        orca_analysis=_pkg("orca-analysis"),
        torch=torch.__version__,
        x_transformers=_pkg("x-transformers"),
        python=platform.python_version(),
        device_name=device_name(device),
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        git_commit=git_commit(),
    )


FIXED_COLUMNS = ("study", "variant_id", "dim", "depth", "heads")
TAIL_COLUMNS = (
    "seq_len",
    "batch",
    "dtype",
    "device",
    "scale",
    "measurement",
    "metric",
    "method",
    "labels",
    "value",
    "unit",
    "status",
    "note",
    "cause",
)


def columns(swept_keys: list[str]) -> list[str]:
    extra = [k for k in swept_keys if k not in FIXED_COLUMNS]
    prov = list(Provenance.__dataclass_fields__)
    return [*FIXED_COLUMNS, *extra, *TAIL_COLUMNS, *prov]


def labels_text(labels: dict[str, Any]) -> str:
    """Labels as stored and exported: compact JSON, keys in declaration order."""
    return json.dumps(labels, separators=(",", ":"), default=str) if labels else ""


_ROW_FIELDS = tuple(f for f in Record.__dataclass_fields__ if f not in ("swept", "labels"))


def to_row(record: Record, provenance: Provenance | dict[str, str]) -> dict[str, Any]:
    """One exported row. Fields are read, not copied (`asdict` deep-copies: most of an export's time);
    the provenance may come as its dict, made once per unit."""
    row = {k: getattr(record, k) for k in _ROW_FIELDS}
    row["labels"] = labels_text(record.labels)
    row.update(record.swept)
    row.update(provenance if isinstance(provenance, dict) else provenance.as_dict())
    return row
