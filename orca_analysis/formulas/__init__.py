"""Closed forms, registered with their citations."""

from . import params  # noqa: F401  (registers the parameter formulas)
from .registry import FORMULAS, Formula, formulas, register_formula

__all__ = ["FORMULAS", "Formula", "formulas", "register_formula"]
