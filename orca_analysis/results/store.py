"""The results file: `reports/<study>/results.csv`, appended and flushed per measurement.

Rows are written as soon as a measurement finishes, so a crash loses nothing finished.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from ..errors import OrcaError
from .records import Provenance, Record, columns, to_row

REPORTS_DIR = Path("reports")


def study_dir(study_name: str, root: Path | None = None) -> Path:
    return (root or REPORTS_DIR) / study_name


class ResultsWriter:
    """Writes records to CSV as they arrive; the header is fixed by the study's swept keys."""

    def __init__(self, path: Path, swept_keys: list[str], provenance: Provenance):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.provenance = path, provenance
        self.fields = columns(swept_keys)
        self._fh = path.open("w", newline="")
        self._csv = csv.DictWriter(self._fh, fieldnames=self.fields, extrasaction="ignore")
        self._csv.writeheader()
        self._fh.flush()

    def write(self, records: list[Record]) -> None:
        for record in records:
            self._csv.writerow(to_row(record, self.provenance))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_results(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise OrcaError(f"no results at {path}: run `orca-analysis run` first")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise OrcaError(f"{path}: unreadable results file ({str(exc).splitlines()[0]})") from None
