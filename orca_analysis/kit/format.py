"""Every number's format, once: registered as Jinja2 filters, and used by sections for text cells.

Sections hand numbers with their units to the templates (`Quantity`); `cell` formats one by its
unit: bytes as MiB, FLOP and rates with SI prefixes, fractions as percentages, counts with commas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

STYLES = ("", "signed", "share", "int", "si", "mib", "plain")


@dataclass(frozen=True)
class Quantity:
    """A number and its unit, for a template to format; `style` overrides the unit's default."""

    value: float | None
    unit: str = ""
    style: str = ""
    digits: int | None = None

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got '{self.style}'")


def missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def si(x: float | None, unit: str = "", digits: int = 3) -> str:
    """3.77e12 -> '3.77 T' + unit."""
    if missing(x):
        return "n/a"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}g} {prefix}{unit}"
    return f"{x:.{digits}g} {unit}".rstrip()


def mib(x: float | None) -> str:
    return "n/a" if missing(x) else f"{x / 2**20:,.1f} MiB"


def pct(x: float | None, digits: int = 2) -> str:
    """A signed change or gap: +0.12%."""
    return "n/a" if missing(x) else f"{x * 100:+.{digits}f}%"


def share(x: float | None, digits: int = 1) -> str:
    """A part of a whole: 55.9%."""
    return "n/a" if missing(x) else f"{x * 100:.{digits}f}%"


def fmt_int(x: Any) -> str:
    return "n/a" if missing(x) else f"{int(round(float(x))):,}"


def fmt_millions(x: Any) -> str:
    return "n/a" if missing(x) else f"{float(x) / 1e6:,.2f} M"


def fixed(x: float | None, digits: int = 3) -> str:
    return "n/a" if missing(x) else f"{x:.{digits}f}"


_SI_UNITS = {"FLOP": "FLOP", "FLOP/s": "FLOP/s", "tokens/s": "tok/s", "s": "s", "FLOP/token": "FLOP"}


def quantity(q: Quantity) -> str:
    """A Quantity in its unit's format (or its style's)."""
    v, unit, style = q.value, q.unit, q.style
    if style == "signed":
        return pct(v, 2 if q.digits is None else q.digits)
    if style == "share" or (not style and unit == "fraction"):
        return share(v, 1 if q.digits is None else q.digits)
    if style == "mib" or (not style and unit == "bytes"):
        return mib(v)
    if style == "int" or (not style and unit in ("params", "tokens", "calls", "heads", "threads")):
        return fmt_int(v)
    if style == "si" or (not style and unit in _SI_UNITS):
        return si(v, _SI_UNITS.get(unit, unit), 3 if q.digits is None else q.digits)
    if not style and unit in ("nats/token", "logit"):
        return fixed(v, 3 if q.digits is None else q.digits)
    return "n/a" if missing(v) else f"{v:.{4 if q.digits is None else q.digits}g}"


def evidence_value(v: Any) -> str:
    """A claim's evidence value: large numbers with commas, the rest to 4 significant digits."""
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def cell(x: Any) -> str:
    """A table cell: a Quantity formatted by its unit, text as it is."""
    return quantity(x) if isinstance(x, Quantity) else str(x)


def md_cell(x: Any) -> str:
    """Keep a value inside one Markdown table cell."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_escape(x: Any) -> Any:
    """Markdown output: neutralise raw HTML in user text without HTML-entity noise."""
    return x.replace("<", "&lt;").replace(">", "&gt;") if isinstance(x, str) else x


def fmt_percent(x: Any, digits: int = 1) -> str:
    return pct(x, digits)


FILTERS = {
    "cell": cell,
    "fmt_int": fmt_int,
    "fmt_millions": fmt_millions,
    "fmt_percent": fmt_percent,
    "fmt_share": share,
    "md_cell": md_cell,
    "si": si,
    "mib": mib,
}
