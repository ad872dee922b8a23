"""Results: declared metrics, tidy records, the store they are kept in (SQLite), and the query over it."""

from .environment import Environment, variant_key
from .frame import export, results_frame
from .records import Provenance, Record, current_provenance
from .store import Store, open_store, study_dir

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
