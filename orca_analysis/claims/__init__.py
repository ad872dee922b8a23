"""Claims: the design notes' statements, each with a verdict computed from stored results."""

from .evaluate import ClaimResult, evaluate
from .evidence import VERDICTS, Evidence, Judgement
from .rules import RULES
from .schema import DEFAULT_CATALOGUE, Claim, ClaimsError, load_catalogue

__all__ = [
    "DEFAULT_CATALOGUE",
    "RULES",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ClaimsError",
    "Evidence",
    "Judgement",
    "evaluate",
    "load_catalogue",
]
