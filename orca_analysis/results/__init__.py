"""Results: declared metrics, tidy records, the store they are kept in (SQLite), and the query over it."""

from .environment import Environment, variant_key
from .records import Provenance, Record, current_provenance
from .store import Store, open_store, study_dir


def __getattr__(name: str):  # pandas is imported only by what reads frames (about 0.5 s)
    if name in ("export", "results_frame"):
        from . import frame

        return getattr(frame, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Environment",
    "Provenance",
    "Record",
    "Store",
    "current_provenance",
    "export",
    "open_store",
    "results_frame",
    "study_dir",
    "variant_key",
]
