"""Closed forms, registered with their citations."""

from . import flops, memory, params  # noqa: F401  (each module registers its formulas)
from .registry import FORMULAS, Formula, formulas, register_formula

__all__ = ["FORMULAS", "Formula", "formulas", "register_formula"]
