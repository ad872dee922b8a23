"""Claims: the design notes' statements, each with a verdict computed from stored results."""

from .evaluate import ClaimResult, evaluate
from .evidence import NOT_TESTABLE, VERDICTS, Evidence, Verdict
from .rules import RULES
from .schema import DEFAULT_CATALOGUE, Claim, ClaimsError, load_catalogue

__all__ = [
    "DEFAULT_CATALOGUE",
    "NOT_TESTABLE",
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
