"""Evaluate a catalogue against stored results: one verdict per claim, computed, never written."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from ..build import fidelity_entries
from ..catalog.vocabulary import Scale, Verdict
from ..results.query import Results
from ..study.schema import Study
from .evidence import PROXY, Evidence, Judgement
from .rules import RULES
from .schema import Claim

# The scale of the rules whose evidence is of one kind (the others set it from the values they read).
RULE_SCALES = {"gradient_health": Scale.PROXY, "kernel_ran": Scale.MEASURED, "fidelity": Scale.ANALYTIC}


@dataclass
class ClaimResult:
    claim: Claim
    verdict: Judgement


def evaluate(claims: list[Claim], results: Results, study: Study, notes: bool = True) -> list[ClaimResult]:
    """Each claim's verdict; `notes`: the catalogue is the Orca notes' (their wording may qualify a verdict)."""
    # where the notes differ from the code is the Orca notes' reading: only their catalogue's verdicts use it
    fidelity = {e.flag: e.as_dict() for e in fidelity_entries(study.base, notes=notes)}
    evidence = Evidence(results, study, fidelity)
    out = []
    for claim in claims:
        try:
            rule, params = RULES[claim.rule.name], dict(claim.rule.params)
            if claim.delta is not None and "delta" in inspect.signature(rule).parameters:
                params["delta"] = claim.delta
            verdict = rule(evidence, **params)
        except TypeError as exc:  # a catalogue rule with parameters its function does not take
            verdict = Judgement(Verdict.NOT_TESTED, f"rule '{claim.rule.name}' cannot run: {exc}")
        if not verdict.scale and verdict.verdict != Verdict.NOT_TESTED:  # rules over one kind of evidence
            verdict.scale = RULE_SCALES.get(claim.rule.name, "")
        if verdict.scale == Scale.PROXY and not verdict.reason.startswith(
            PROXY
        ):  # it says so in its own words
            verdict.reason = PROXY + verdict.reason
        if verdict.verdict == Verdict.NOT_TESTED and claim.needs:
            verdict.reason = f"{verdict.reason}; would be tested by: {claim.needs}"
        if not verdict.anchor:
            verdict.anchor = f"claim-{claim.id}"
        out.append(ClaimResult(claim, verdict))
    return out
