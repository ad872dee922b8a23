"""Results: tidy records, the store they are kept in (SQLite), and the frame/files made from it."""

from .csvfile import ResultsWriter, read_results
from .environment import Environment, variant_key
from .frame import export, results_frame
from .records import Provenance, Record, current_provenance
from .store import Store, open_store, study_dir

__all__ = [
    "Environment",
    "Provenance",
    "Record",
    "ResultsWriter",
    "Store",
    "current_provenance",
    "export",
    "open_store",
    "read_results",
    "results_frame",
    "study_dir",
    "variant_key",
]
