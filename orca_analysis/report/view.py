"""Turn stored results into the view model for the templates: typed objects (StudyView, KeyNumbers, Finding
...) where the templates read fields, dicts where a section or a JSON file is passed through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..build import fidelity_entries
from ..catalog.declared.params import EMBEDDING_AND_LOGITS_SHARE, PARAMS, PARAMS_CLOSED_FORM_GAP
from ..catalog.labels import Breakdown
from ..catalog.vocabulary import Method, Status
from ..claims import Claim, ClaimResult, evaluate
from ..measurements import in_order
from ..results.query import Results
from ..study.schema import Study, Workloads
from .claims_view import claim_groups, claims_json, summary_findings, verdict_counts, verdict_counts_by_scale
from .findings import key_findings
from .frontier import frontier_section
from .gpu import gpu_section
from .recommendations_view import recommendations_view


@dataclass(frozen=True)
class StudyView:
    """What the report says of the study: its name, description and source (with its digest), its workloads."""

    name: str
    description: str
    source: str
    sha256: str
    workloads: Workloads

    @classmethod
    def of(cls, study: Study) -> StudyView:
        return cls(study.name, study.description, study.source, study.sha256, study.workloads)


def _said_why(section, name: str, results: Results, retry: str):  # (Section) -> Section
    """A section of a listed measurement with nothing to show says why: its calls failed (the first error, the
    command that reruns them) or it has not run yet; never "add it to the study", which it already is in."""
    if "to the study's measurements" in section.missing:  # the sections' generic text
        failed = results.records(name, status=Status.ERROR)
        section.missing = (
            f"no `{name}` results to show: {len(failed)} of its records failed (first: {failed[0].note[:160]}); "
            f"rerun them with `{retry}`"
            if failed
            else f"`{name}` is in the study's measurements but has no results yet: run the study"
        )
    return section


@dataclass(frozen=True)
class KeyNumbers:
    """The base's parameter total and embedding share, and whether counter and closed form agree everywhere."""

    params_total: float | None
    embedding_share: float | None
    params_agree: bool


def key_numbers(results: Results, study: Study) -> KeyNumbers:
    base = study.base_variant.variant_id
    gaps = results.values(PARAMS_CLOSED_FORM_GAP)
    other = results.values(PARAMS, method=Method.COUNTER, component="other")
    return KeyNumbers(
        results.number(PARAMS, variant=base, method=Method.COUNTER, component=Breakdown.TOTAL),
        results.number(EMBEDDING_AND_LOGITS_SHARE, variant=base),
        bool(gaps) and all(v.value == 0 for v in gaps) and all(v.value == 0 for v in other),
    )


def purposes(verdicts: list[ClaimResult]) -> dict[str, tuple[str, str, str]]:
    """flag -> (claim id, claim, verdict) of the claims that say what a flag is for (kind benefit)."""
    return {
        cr.claim.subject.removeprefix("flag:"): (cr.claim.id, cr.claim.claim, cr.verdict.verdict)
        for cr in verdicts
        if cr.claim.subject.startswith("flag:") and cr.claim.kind == "benefit"
    }


def build_view(
    study: Study,
    results: Results,
    provenance: dict[str, Any],
    claims: list[Claim],
    claims_source: str,
    notes: bool = False,
) -> dict[str, Any]:
    """The report's view; `notes`: the claims are the Orca design notes' catalogue (their reading may qualify)."""
    everything = results  # the remedies' variants too
    failures = [
        r for r in results.records(status=Status.ERROR) if not r.metric
    ]  # calls that could not run at all
    results = results.only_variants({v.variant_id for v in study.variants()})  # the rest reads the sweep
    verdicts = evaluate(claims, results, study, notes=notes)
    recommended = recommendations_view(everything, study, purposes(verdicts))
    chosen = [m for m in in_order() if m.name in study.measurements]
    retry = f"orca-analysis run {study.name if study.source.startswith('builtin:') else study.source} --retry-failed"
    sections = [
        _said_why(m.shown.section(results, study), m.name, everything, retry)
        for m in chosen
        if m.shown.section
    ]
    sections += [s for s in (frontier_section(results, study), gpu_section(results, study)) if s]
    measured = results.measured()
    base_fid = [e.as_dict() for e in fidelity_entries(study.base, notes=study.names_notes)]
    return {
        "study": StudyView.of(study),
        "provenance": provenance,
        "fidelity": base_fid,
        "notes_differ": [e for e in base_fid if e["notes_differ"]],
        "key_numbers": key_numbers(results, study),
        "failures": [
            {"variant_id": r.variant_id, "measurement": r.measurement, "error": r.note} for r in failures
        ],
        "retry": retry,
        "claims_source": claims_source,
        "names_notes": study.names_notes,
        "claims_title": "Claims of the design notes, with verdicts"
        if study.names_notes
        else "Claims, with verdicts",
        "has_claims": bool(claims),
        "claim_groups": claim_groups(verdicts),
        "verdict_counts": verdict_counts(verdicts),
        "verdict_counts_by_scale": verdict_counts_by_scale(verdicts),
        "claims_json": claims_json(verdicts),
        "findings": summary_findings(verdicts),
        "sections": [sec.as_dict() for sec in sections],
        "key_findings": key_findings(results, study),
        "missing": [{"name": m.name, "what": m.description} for m in chosen if m.name not in measured],
        "recommendations": recommended,
    }
