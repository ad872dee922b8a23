"""A remedy's quality gate: its `no_worse` expectation on a proxy loss, read by the rules of the claims.

The change in loss is paired by seed (the before and after variants train on the same seeds: the same
data order, evaluation windows and, where shapes match, initial weights). It passes only when the paired
interval lies below +delta (non-inferiority); it fails when the interval lies beyond +delta; otherwise
it is inconclusive. It is not testable at this scale when the runs have not left their initial fall
(claims/evidence.initial_fall). (A change bound to the vocabulary, on a proxy whose vocabulary holds a
very different share of its parameters than the design's, is not trained at all: the training
measurement stores why, and recommend.py reads it.)
"""

from __future__ import annotations

from typing import Any

from ..catalog.vocabulary import NOT_TESTABLE_AT_THIS_SCALE, Verdict
from ..claims.evidence import Evidence, initial_fall
from ..results.query import Results, Value
from ..study.remedies import Expect
from ..study.schema import Study
from .outcomes import RemedyStatus


def no_worse(
    e: Expect, label: str, effect: Any, unit: str, arms: tuple[Value, Value], results: Results, study: Study
) -> tuple[bool | None, str, str]:
    """(met: True / False / None, reason, status word: "" | inconclusive | not testable at this scale)."""
    late = initial_fall(Evidence(results, study, {}), {"before": arms[0], "after": arms[1]})
    if late:
        return None, f"{label}: {NOT_TESTABLE_AT_THIS_SCALE}: {late}", RemedyStatus.NOT_TESTABLE
    lo, hi, said = effect.ci_low, effect.ci_high, effect.text(unit)
    if lo is not None and lo > e.delta:
        return False, f"{label}: worse by {said}: the interval lies beyond +{e.delta:g}", ""
    if hi is not None and hi < e.delta:
        return True, f"{label}: {said}: the interval lies below +{e.delta:g}, so not worse by that much", ""
    return (
        None,
        (
            f"{label}: {said}: the interval straddles +{e.delta:g}, so the data cannot tell whether it "
            "is worse by that much"
        ),
        RemedyStatus.INCONCLUSIVE,
    )


def purpose_caveats(
    remedy_values: dict[tuple[str, str], Any], base: Any, purposes: dict[str, Any]
) -> list[str]:
    """What a change gives up: for each flag it turns off that a claim says is for something, that claim's
    verdict (`purposes`: flag -> (claim id, claim text, verdict))."""
    out = []
    for (_, key), value in remedy_values.items():
        if value or not base.get(key) or key not in purposes:
            continue
        cid, text, verdict = purposes[key]
        said = f"{cid}: {text.rstrip('.')}"
        if verdict == Verdict.SUPPORTED:
            out.append(
                f"removes {key}, and the proxy supports what it is for ({said}); the quality gate at the "
                "training length does not see that loss"
            )
        elif verdict == Verdict.CONTRADICTED:
            out.append(
                f"removes {key}; what it is for ({said}) was contradicted here, so the proxy shows no such "
                "benefit to lose"
            )
        else:
            out.append(
                f"removes {key}; what it is for ({said}) was {verdict} here, so whether the change loses it "
                "is not known"
            )
    return out
