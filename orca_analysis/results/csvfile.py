"""An atomic write of a results frame (CSV or Parquet): a reader never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from ..errors import OrcaError


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
