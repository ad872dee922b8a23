"""Model build: x-transformers variants, DeepNorm realisation, fidelity entries."""

from .builder import DTYPES, build_model, fake_model, library_kwargs
from .fidelity import FidelityEntry, fidelity_entries

__all__ = ["DTYPES", "FidelityEntry", "build_model", "fake_model", "fidelity_entries", "library_kwargs"]
