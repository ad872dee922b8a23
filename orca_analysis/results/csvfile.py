"""CSV files of records: a streaming writer, a strict reader, and an atomic write of a frame."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from ..errors import OrcaError
from .records import Provenance, Record, columns, to_row


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


def write_atomic(frame: pd.DataFrame, path: Path, fmt: str = "csv") -> Path:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        try:
            frame.to_parquet(tmp, index=False)
        except ImportError:
            raise OrcaError("parquet export needs pyarrow: pip install pyarrow") from None
        except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid / ArrowTypeError: mixed columns
            tmp.unlink(missing_ok=True)
            raise OrcaError(f"parquet export failed ({str(exc).splitlines()[0]}); try --format csv") from None
    else:
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
