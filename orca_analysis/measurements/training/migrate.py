"""Schema-1 training records -> schema 2.

Then: categories `key=value,...` (seed, step, tokens, ...), aggregate records for the mean and
spread over seeds (seed=mean, seed=spread), one `head_ablation_increase` metric told apart by its
`pattern`, the unmasked loss in the summaries' category (base_loss=...), the corpus description and
the training set-up in categories. Now: labels (numbers as numbers), no aggregates (the query computes
them from the samples), a metric per pattern, `head_ablation_base_loss` of its own, the rest of a
description in the note.
"""

from __future__ import annotations

from typing import Any

from ...results.metrics import METRICS, OWNERS, Metric
from ...results.migrate import parse_category

RENAMED = {"head_ablation_increase": {"single": "head_ablation_single_increase",
                                      "quarter": "head_ablation_quarter_increase"}}  # fmt: skip
LABEL_RENAMED = {"kv_cache_bytes": {"scale": "model", "batch": "cache_batch"}}
TEXT_LABELS = {"corpus", "sha256", "tokenizer", "norm", "pos", "attn", "model", "heads_off"}
ANALYTIC = {"kv_cache_bytes"}  # a closed form of the full model: analytic at any scale


def _typed(key: str, text: str) -> Any:
    """A label's value as the new records write it: numbers as int or float, names as text."""
    if key in TEXT_LABELS:
        return text
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _declared(metric: str) -> Metric:
    """The training metric of that name; any other raises ValueError (the unit is then measured anew)."""
    if "training" not in OWNERS.get(metric, ()):
        raise ValueError(f"training: no schema-2 form for the old metric '{metric}'")
    return METRICS[metric]


def _scale(old: dict[str, Any], metric: str) -> str:
    if metric in ANALYTIC:
        return "analytic"
    return "measured" if str(old.get("device", "")).startswith("cuda") else "proxy"


def _note(metric: str, parts: dict[str, str], declared: tuple[str, ...]) -> str:
    """The category parts the new labels do not hold, as the new records' notes say them."""
    rest = {k: v for k, v in parts.items() if k not in declared}
    if metric == "train_flops_per_token":
        return rest.get("formula", "")
    if metric == "grad_health_train_loss" and {"steps", "batch"} <= set(rest):
        return f"last 5 of {rest['steps']} steps at batch {rest['batch']}"
    return ",".join(f"{k}={v}" for k, v in rest.items())


def migrate_v1(unit_records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base_losses: dict[Any, float] = {}  # seed -> the unmasked loss the head-ablation summaries named
    for old in unit_records:
        if old["method"] == "aggregate":  # seed=mean / seed=spread: the query gives them
            continue
        parts = parse_category(old["category"] or "")
        renames = LABEL_RENAMED.get(old["metric"], {})
        parts = {renames.get(k, k): v for k, v in parts.items()}
        metric = RENAMED.get(old["metric"], {}).get(parts.pop("pattern", ""), old["metric"])
        m = _declared(metric)
        if old["metric"] in RENAMED and metric == old["metric"]:
            raise ValueError(f"training: '{metric}' without a known pattern")
        if "base_loss" in parts and "seed" in parts:
            base_losses.setdefault(_typed("seed", parts["seed"]), float(parts.pop("base_loss")))
        status, value = old["status"], old["value"]
        note = old["error"] or ""
        if status == "ok" and value is None:  # e.g. a ratio over a zero norm: nothing was measured
            zero = (
                "the last block's gradient norm is 0" if metric == "grad_norm_first_over_last" else "no value"
            )
            status, note = "skipped", note or zero
        if status != "ok":
            value = None  # a diverged run's loss was not finite: the note says so
        # an old skip or failure named fewer labels than the declaration: the rest are unknown ("")
        labels = {k: _typed(k, parts[k]) if k in parts else "" for k in m.labels}
        if status == "ok" and any(k not in parts for k in m.labels):
            raise ValueError(f"training: old {metric} record lacks label(s) of {m.labels}")
        described = _note(metric, parts, m.labels)
        note = f"{note} ({described})" if note and described else note or described
        new = {"metric": metric, "method": m.methods[0], "value": value, "labels": labels,
               "scale": _scale(old, metric), "dtype": old["dtype"]}  # fmt: skip
        if status != "ok":
            new["status"] = status
        if note:
            new["note"] = note
        out.append(new)
    for old in unit_records[:1]:
        for seed, loss in base_losses.items():
            out.append({"metric": "head_ablation_base_loss", "method": "measured", "value": loss,
                        "labels": {"seed": seed}, "scale": _scale(old, ""), "dtype": old["dtype"]})  # fmt: skip
    return out
