"""Claims and the executive summary as plain dicts for the templates."""

from __future__ import annotations

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


def claim_dict(cr: ClaimResult) -> dict[str, Any]:
    c, v = cr.claim, cr.verdict
    return {
        "id": c.id,
        "subject": c.subject,
        "kind": c.kind,
        "claim": c.claim,
        "tests": c.tests,
        "verdict": v.verdict,
        "css": v.verdict.replace(" ", "-"),
        "reason": v.reason,
        "anchor": v.anchor,
        "evidence": [
            {**row, "value": f"{evidence_value(row['value'])} {row.get('unit', '')}".rstrip()}
            for row in v.evidence
        ],
    }


def claim_groups(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """Claims grouped by subject: dim, depth, heads, then the flags."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for cr in results:
        key = cr.claim.subject if not cr.claim.subject.startswith("flag:") else "flags"
        groups.setdefault(key, []).append(claim_dict(cr))
    order = [*SUBJECT_TITLES, "flags"]
    titled = {**SUBJECT_TITLES, "flags": "What the notes say each flag does"}
    ordered = [k for k in order if k in groups] + [k for k in groups if k not in order]
    return [{"title": titled.get(k, k), "claims": groups[k]} for k in ordered]


def verdict_counts(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """[{verdict, count, css}] in the order of VERDICTS, "not testable at this scale" apart from the rest."""
    counts = dict.fromkeys(VERDICTS, 0)
    for cr in results:
        counts[cr.verdict.verdict] += 1
    return [{"verdict": v, "count": n, "css": v.replace(" ", "-")} for v, n in counts.items()]


def summary_findings(results: list[ClaimResult], limit: int = 6) -> list[dict[str, Any]]:
    """The findings that would change the design: heavy claims that the data contradicts or qualifies."""
    tested = [
        cr
        for cr in results
        if cr.verdict.verdict in (Verdict.CONTRADICTED, Verdict.QUALIFIED) and cr.claim.weight >= 2
    ]
    tested.sort(key=lambda cr: (-cr.claim.weight, SEVERITY[cr.verdict.verdict], cr.claim.id))
    return [claim_dict(cr) for cr in tested[:limit]]


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


def verdict_counts_by_scale(results: list[ClaimResult]) -> list[dict[str, Any]]:
    """Judgement counts kept apart by scale: analytic or measured at full scale, against proxy models."""
    by: dict[str, list[ClaimResult]] = {}
    for cr in results:
        by.setdefault("proxy" if cr.verdict.scale == Scale.PROXY else "full", []).append(cr)
    return [
        {"scale": k, "title": SCALE_TITLES[k], "counts": verdict_counts(by[k])}
        for k in SCALE_TITLES
        if k in by
    ]
