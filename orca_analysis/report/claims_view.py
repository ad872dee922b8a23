"""Claims and the executive summary as plain dicts for the templates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..catalog.metrics import METRICS
from ..catalog.vocabulary import Scale, Verdict
from ..claims import VERDICTS, ClaimResult
from ..kit.format import evidence_value

SUBJECT_TITLES = {"dim": "Width (dim)", "depth": "Depth", "heads": "Heads"}
SEVERITY = {
    Verdict.CONTRADICTED: 0,
    Verdict.QUALIFIED: 1,
    Verdict.INCONCLUSIVE: 2,
    Verdict.SUPPORTED: 3,
    Verdict.NOT_TESTABLE: 4,
    Verdict.NOT_TESTED: 5,
}
SCALE_TITLES = {
    "full": "Analytic or measured at full scale",
    "proxy": "Proxy scale (small models trained on a CPU, not the model itself)",
}


@dataclass(frozen=True)
class ClaimView:
    """A claim as the report shows it: the claim, its verdict (and its CSS class), the reason and the evidence
    rows ({label, value with its unit, method})."""

    id: str
    subject: str
    kind: str
    claim: str
    tests: list[str]  # the measurements that test it
    verdict: str
    css: str
    reason: str
    anchor: str
    evidence: list[dict[str, Any]]

    @classmethod
    def of(cls, cr: ClaimResult) -> ClaimView:
        c, v = cr.claim, cr.verdict
        rows = [
            {**row, "value": f"{evidence_value(row['value'])} {row.get('unit', '')}".rstrip()}
            for row in v.evidence
        ]
        css = v.verdict.replace(" ", "-")
        return cls(c.id, c.subject, c.kind, c.claim, c.tests, v.verdict, css, v.reason, v.anchor, rows)


@dataclass(frozen=True)
class ClaimGroup:
    title: str
    claims: list[ClaimView]


@dataclass(frozen=True)
class VerdictCount:
    verdict: str
    count: int
    css: str


@dataclass(frozen=True)
class ScaleCounts:
    scale: str  # full | proxy
    title: str
    counts: list[VerdictCount]


def claim_groups(results: list[ClaimResult]) -> list[ClaimGroup]:
    """Claims grouped by subject: dim, depth, heads, then the flags."""
    groups: dict[str, list[ClaimView]] = {}
    for cr in results:
        key = cr.claim.subject if not cr.claim.subject.startswith("flag:") else "flags"
        groups.setdefault(key, []).append(ClaimView.of(cr))
    order = [*SUBJECT_TITLES, "flags"]
    titled = {**SUBJECT_TITLES, "flags": "What the notes say each flag does"}
    ordered = [k for k in order if k in groups] + [k for k in groups if k not in order]
    return [ClaimGroup(titled.get(k, k), groups[k]) for k in ordered]


def verdict_counts(results: list[ClaimResult]) -> list[VerdictCount]:
    """The count of each verdict, in the order of VERDICTS, "not testable at this scale" apart from the rest."""
    counts = dict.fromkeys(VERDICTS, 0)
    for cr in results:
        counts[cr.verdict.verdict] += 1
    return [VerdictCount(v, n, v.replace(" ", "-")) for v, n in counts.items()]


def summary_findings(results: list[ClaimResult], limit: int = 6) -> list[ClaimView]:
    """The findings that would change the design: heavy claims that the data contradicts or qualifies."""
    tested = [
        cr
        for cr in results
        if cr.verdict.verdict in (Verdict.CONTRADICTED, Verdict.QUALIFIED) and cr.claim.weight >= 2
    ]
    tested.sort(key=lambda cr: (-cr.claim.weight, SEVERITY[cr.verdict.verdict], cr.claim.id))
    return [ClaimView.of(cr) for cr in tested[:limit]]


EFFECT_KEYS = ("estimate", "ci_low", "ci_high", "n", "interval", "paired", "why_unpaired", "mde")


def claims_json(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """reports/<study>/claims.json: one entry per claim, the effect in the claim's own direction
    (positive: what the claim says happens), null intervals where the evidence is exact; for a proxy-scale
    result the interval's kind (paired by seed or not, and why), n, delta, the minimal detectable effect
    and the positive control's effect where the test has one."""

    out = []
    for cr in results:
        v, e = cr.verdict, cr.verdict.effect
        metric = v.metric or (cr.claim.rule.params.get("metric") or "")
        out.append(
            {
                "id": cr.claim.id,
                "claim": cr.claim.claim,
                "verdict": v.verdict,
                "reason": v.reason,
                "scale": v.scale or None,
                "metric": metric or None,
                "unit": v.unit or (METRICS[metric].unit if metric in METRICS else None),
                **(e.as_json() if e else dict.fromkeys(EFFECT_KEYS)),
                "delta": v.delta if v.delta is not None else cr.claim.delta,
                "control": v.control.as_json() if v.control else None,
                "evidence": v.evidence,
            }
        )
    return out


def verdict_counts_by_scale(results: list[ClaimResult]) -> list[ScaleCounts]:
    """Judgement counts kept apart by scale: analytic or measured at full scale, against proxy models."""
    by: dict[str, list[ClaimResult]] = {}
    for cr in results:
        by.setdefault("proxy" if cr.verdict.scale == Scale.PROXY else "full", []).append(cr)
    return [ScaleCounts(k, SCALE_TITLES[k], verdict_counts(by[k])) for k in SCALE_TITLES if k in by]
