"""Schema-1 probe records -> schema 2.

Then a probe's status was its verdict: ok = pass, error = fail (the numbers or the exception text in
`error`), skipped = not applicable; `value` was the max |logit diff| and the category
`case=<case>,tol=<tolerance>`. Now the verdict is a value (1.0 / 0.0) with the old error as its note,
the diff and the tolerance are sibling metrics, and a skip stays a skip.
"""

from __future__ import annotations

from typing import Any

from ...results.migrate import parse_category
from .run import PROBES

M = "measured"


def _scale(old: dict[str, Any]) -> str:
    return "measured" if str(old.get("device", "")).startswith("cuda") else "proxy"


def migrate_v1(unit_records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for old in unit_records:
        if old["method"] == "aggregate":
            continue
        parts = parse_category(old["category"] or "")
        labels = {"case": parts.get("case", "as_built")}
        common = {"method": M, "labels": labels, "scale": _scale(old), "dtype": old["dtype"]}
        error = old["error"] or ""
        value = old["value"]
        metric = old["metric"]
        if metric in PROBES:
            if old["status"] == "skipped":
                out.append({**common, "metric": metric, "value": None, "status": "skipped", "note": error})
                continue
            tol = float(parts["tol"]) if "tol" in parts else None
            passed = old["status"] == "ok"
            note = error
            if passed and value is not None and tol is not None:
                note = f"max |diff| {value:.3g} <= tolerance {tol:.2g}"
            out.append({**common, "metric": metric, "value": float(passed), "note": note})
            if value is not None:
                out.append({**common, "metric": f"{metric}_max_diff", "value": float(value)})
            if tol is not None:
                out.append({**common, "metric": f"{metric}_tolerance", "value": tol})
        elif metric == "causality_downstream":
            # old: status error when the change reached nothing downstream (the probe was blind)
            sensitive = old["status"] == "ok"
            if value is not None:
                out.append({**common, "metric": metric, "value": float(value)})
            out.append({**common, "metric": "causality_sensitive", "value": float(sensitive),
                        "note": "" if sensitive else error})  # fmt: skip
        else:
            raise ValueError(f"probes: no schema-2 form for the old metric '{metric}'")
    return out
