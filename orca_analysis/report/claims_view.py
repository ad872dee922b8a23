"""Claims and the executive summary as plain dicts for the templates."""

from __future__ import annotations

from typing import Any

from ..claims import ClaimResult
from .format import evidence_value

SUBJECT_TITLES = {"dim": "Width (dim)", "depth": "Depth", "heads": "Heads"}
SEVERITY = {"contradicted": 0, "qualified": 1, "inconclusive": 2, "supported": 3, "not tested yet": 4}


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


def verdict_counts(results: list[ClaimResult]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITY, 0)
    for cr in results:
        counts[cr.verdict.verdict] += 1
    return counts


def summary_findings(results: list[ClaimResult], limit: int = 6) -> list[dict[str, Any]]:
    """The findings that would change the design: heavy claims that the data contradicts or qualifies."""
    tested = [
        cr for cr in results if cr.verdict.verdict in ("contradicted", "qualified") and cr.claim.weight >= 2
    ]
    tested.sort(key=lambda cr: (-cr.claim.weight, SEVERITY[cr.verdict.verdict], cr.claim.id))
    return [claim_dict(cr) for cr in tested[:limit]]
