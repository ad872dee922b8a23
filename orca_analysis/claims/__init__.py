"""Claims: the design notes' statements, each with a verdict computed from stored results."""

from .evaluate import ClaimResult, evaluate
from .evidence import Evidence, Verdict
from .rules import RULES, VERDICTS
from .schema import DEFAULT_CATALOGUE, Claim, ClaimsError, load_catalogue

__all__ = [
    "DEFAULT_CATALOGUE",
    "RULES",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ClaimsError",
    "Evidence",
    "Verdict",
    "evaluate",
    "load_catalogue",
]
