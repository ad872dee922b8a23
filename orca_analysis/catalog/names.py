"""How a name that is not known is answered: with the closest known one."""

from __future__ import annotations

import difflib


def did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
