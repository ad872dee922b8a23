"""A registry of small closed-form formulas, each with a citation.

Modelled on torch/utils/flop_counter.py's `register_flop_formula`: one function per
quantity, shape comments on every formula, limits stated where they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Formula:
    name: str  # "params.attention"
    fn: Callable
    citation: str

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


FORMULAS: dict[str, Formula] = {}


def register_formula(name: str, citation: str) -> Callable[[Callable], Formula]:
    def wrap(fn: Callable) -> Formula:
        if name in FORMULAS:
            raise ValueError(f"formula '{name}' is registered twice")
        FORMULAS[name] = Formula(name, fn, citation)
        return FORMULAS[name]

    return wrap


def formulas(prefix: str) -> dict[str, Formula]:
    """The registered formulas under `prefix.`, keyed by their last name part."""
    return {n.split(".", 1)[1]: f for n, f in FORMULAS.items() if n.startswith(prefix + ".")}
