"""The probes section: each variant's verdicts, and the base's KV-cache cases flag by flag."""

from __future__ import annotations

from ...catalog.declared.probes import CAUSALITY, KERNEL_AGREEMENT, KV_CACHE, KV_CACHE_MAX_DIFF, MAX_DIFF
from ...catalog.labels import Case
from ...catalog.vocabulary import Status
from ...kit.format import Quantity, si
from ...kit.sections import Section, Table, variant_order
from ...results.query import Results
from .run import PROBES


def probe_cell(results: Results, vid: str, probe: str, case: str | None = None) -> str:
    """'pass (max |diff| x)', 'FAIL: <why>' or 'not run' over the probe's cases (or one case)."""
    where = {"variant": vid, **({"case": case} if case else {})}
    verdicts = results.values(probe, **where)
    if not verdicts:
        return "not run"
    failed = [v for v in verdicts if v.value == 0]
    if failed:
        return "FAIL: " + failed[0].note[:80]
    diffs = [v.value for v in results.values(MAX_DIFF[probe], **where)]
    return f"pass (max |diff| {si(max(diffs), '', 2)})" if diffs else "pass"


def probes_table(results: Results, study) -> Table | None:
    probed = {v.variant_id for p in PROBES for v in results.values(p, status=None)}
    rows = [
        [
            vid,
            probe_cell(results, vid, CAUSALITY),
            probe_cell(results, vid, KERNEL_AGREEMENT),
            probe_cell(results, vid, KV_CACHE, Case.AS_BUILT),
        ]
        for vid in variant_order(study)
        if vid in probed
    ]
    if not rows:
        return None
    return Table(
        "Behaviour probes",
        "Causality: changing token t+1 must leave every output at positions <= t "
        "unchanged (max |logit change| shown). Kernel agreement: flash-enabled and math attention "
        "paths give the same logits within the dtype tolerance. KV cache: logits from cached "
        "incremental decoding against a full recompute; a crash is a result.",
        ["variant", "causality", "kernel agreement", "KV-cache decoding"],
        rows,
    )


def base_cases_table(results: Results, study) -> Table | None:
    base = variant_order(study)[0]
    cases = results.values(KV_CACHE, variant=base, status=None)
    if not cases:
        return None
    rows = []
    for v in cases:
        case = v.get("case")
        diff = results.one(KV_CACHE_MAX_DIFF, variant=base, device=v.device, case=case)
        result = "skipped" if v.status != Status.OK else "pass" if v.value == 1 else "FAIL"
        rows.append(
            [
                case,
                result,
                "-" if diff is None else Quantity(diff.value, "logit", "plain", 2),
                "" if result == "pass" else v.note[:100],
            ]
        )
    return Table(
        "KV-cache decoding on the base, flag by flag",
        "The same probe with one flag removed (without=...) or with only a pair of flags on "
        "(only=...), to find which flags break cached decoding. Max |logit diff| in logits.",
        ["case", "result", "max |diff|", "error"],
        rows,
    )


def probes_section(results: Results, study) -> Section:
    section = Section(
        "probes",
        "Behaviour probes",
        "Probes on every variant: causality, cached (KV) decoding against a full recompute, and agreement "
        "of the attention kernels; each probe's outcome is a pass or a fail with its numbers.",
    )
    section.tables += [t for t in (probes_table(results, study), base_cases_table(results, study)) if t]
    if not section.tables:
        section.missing = "no `probes` results: add `probes` to the study's measurements and run it"
    return section
