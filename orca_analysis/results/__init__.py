"""Results: tidy records and the file they are kept in."""

from .records import Provenance, Record, current_provenance
from .store import ResultsWriter, read_results, study_dir

__all__ = ["Provenance", "Record", "ResultsWriter", "current_provenance", "read_results", "study_dir"]
