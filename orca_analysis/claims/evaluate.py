"""Evaluate a catalogue against stored results: one verdict per claim, computed, never written."""

from __future__ import annotations

from dataclasses import dataclass

from ..build import fidelity_entries
from ..results.query import Results
from ..study.schema import Study
from .evidence import Evidence, Verdict
from .rules import RULES
from .schema import Claim


@dataclass
class ClaimResult:
    claim: Claim
    verdict: Verdict


def evaluate(claims: list[Claim], results: Results, study: Study) -> list[ClaimResult]:
    fidelity = {e.flag: e.as_dict() for e in fidelity_entries(study.base)}
    evidence = Evidence(results, study, fidelity)
    out = []
    for claim in claims:
        try:
            verdict = RULES[claim.rule.name](evidence, **claim.rule.params)
        except TypeError as exc:  # a catalogue rule with parameters its function does not take
            verdict = Verdict("not tested yet", f"rule '{claim.rule.name}' cannot run: {exc}")
        if verdict.verdict == "not tested yet" and claim.needs:
            verdict.reason = f"{verdict.reason}; would be tested by: {claim.needs}"
        if not verdict.anchor:
            verdict.anchor = f"claim-{claim.id}"
        out.append(ClaimResult(claim, verdict))
    return out
