"""Turn stored results into a plain view model (dicts and lists) for the templates."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..build import fidelity_entries
from ..claims import Claim, evaluate
from ..formulas.params import PARAM_COMPONENTS
from ..study.schema import Study
from .claims_view import claim_groups, summary_findings, verdict_counts
from .figures import Figure, param_split, params_vs_axes
from .findings import key_findings
from .sections.flops import flops_section
from .sections.memory import memory_section
from .sections.quality import quality_section
from .sections.speed import speed_section

SHAPE_AXES = ("dim", "depth", "heads")
MISSING_KEYS = {
    "flops": ["flops"],
    "memory": ["memory"],
    "speed": ["kernels", "attention_speed", "speed"],
    "quality": ["probes", "training"],
}
NOT_YET = {
    "flops": "FLOPs per token and per training step (operator counter, fvcore, closed form)",
    "memory": "training and inference memory, KV cache included (closed form, simulated, measured)",
    "speed": "attention kernel that runs, attention and end-to-end throughput",
    "quality": "behaviour probes and short training runs",
}


def params_table(results: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per variant: counter components, closed-form total, agreement, delta vs base."""
    ok = results[(results["measurement"] == "params") & (results["status"] == "ok")]
    if ok.empty:
        return pd.DataFrame()
    wide = ok.pivot_table(index="variant_id", columns=["method", "metric"], values="value", aggfunc="first")
    counter, closed = wide["counter"], wide["closed_form"]
    table = counter[["total", *PARAM_COMPONENTS, "other"]].copy()
    table["closed_form_total"] = closed["total"]
    table["closed_form_gap"] = (table["total"] - table["closed_form_total"]) / table["total"]
    table["layers"] = table["attention"] + table["feedforward"] + table["norm"]
    order = [v.variant_id for v in study.variants() if v.variant_id in table.index]
    table = table.loc[order]
    base_total = table.loc["base", "total"] if "base" in table.index else float("nan")
    table["delta_vs_base"] = table["total"] / base_total - 1
    table = table.reset_index()
    swept = {v.variant_id: v.swept for v in study.variants()}
    changed = {
        v.variant_id: [k for k, val in v.swept.items() if val != study.base.get(k)] for v in study.variants()
    }
    for axis in SHAPE_AXES:
        table[axis] = [swept[v].get(axis, study.base.get(axis)) for v in table["variant_id"]]
    # a variant lies "on" an axis when only that axis differs from base (base lies on all of them)
    table["on_axis"] = [
        set(SHAPE_AXES) if not changed[v] else set(changed[v]) if len(changed[v]) == 1 else set()
        for v in table["variant_id"]
    ]
    return table


def build_view(
    study: Study, results: pd.DataFrame, provenance: dict[str, Any], claims: list[Claim], claims_source: str
) -> dict[str, Any]:
    table = params_table(results, study)
    verdicts = evaluate(claims, results, study)
    figures: list[Figure] = []
    if not table.empty:
        fig = params_vs_axes(table, [a for a in SHAPE_AXES if a in table.columns])
        figures += [f for f in (fig, param_split(table)) if f]
    sections = [
        build(results, study) for build in (flops_section, memory_section, speed_section, quality_section)
    ]
    # a measurement that could not run at all (no metric); error records that are results stay in their sections
    failures = results[(results["status"] == "error") & results["metric"].fillna("").eq("")][
        ["variant_id", "measurement", "error"]
    ]
    measured = set(results.loc[results["status"] == "ok", "measurement"])
    base_fid = [e.as_dict() for e in fidelity_entries(study.base)]
    return {
        "study": {
            "name": study.name,
            "description": study.description,
            "source": study.source,
            "sha256": study.sha256,
            "mode": study.sweep.mode,
            "axes": {k[1]: v for k, v in study.sweep.axes.items()},
            "workloads": {
                "seq_lens": study.workloads.seq_lens,
                "batch_sizes": study.workloads.batch_sizes,
                "dtype": study.workloads.dtype,
            },
        },
        "provenance": provenance,
        "fidelity": base_fid,
        "notes_differ": [e for e in base_fid if e["notes_differ"]],
        "params_rows": table.drop(columns=["on_axis"]).to_dict("records") if not table.empty else [],
        "params_agree": bool(
            not table.empty and (table["closed_form_gap"] == 0).all() and (table["other"] == 0).all()
        ),
        "figures": figures,
        "failures": failures.to_dict("records"),
        "claims_source": claims_source,
        "claim_groups": claim_groups(verdicts),
        "verdict_counts": verdict_counts(verdicts),
        "findings": summary_findings(verdicts),
        "sections": [sec.as_dict() for sec in sections],
        "key_findings": key_findings(results, study),
        "missing": [
            {"name": k, "what": v} for k, v in NOT_YET.items() if not (set(MISSING_KEYS[k]) & measured)
        ],
    }
