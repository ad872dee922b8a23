"""Parameters: the library's own count, split by component, beside the closed form.

Counter: walk the built model (no weight memory: FakeTensorMode) and give each parameter to
the outermost module of a known kind that owns it. Closed form: formulas/params.py.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from x_transformers import x_transformers as xt

from ...build import fake_model
from ...catalog.declared.params import (
    EMBEDDING_AND_LOGITS_SHARE,
    PARAMS,
    PARAMS_CLOSED_FORM_GAP,
    PARAMS_DELTA_VS_BASE,
)
from ...catalog.labels import Breakdown
from ...catalog.vocabulary import Method
from ...formulas.params import PARAM_COMPONENTS, closed_form_params
from ...instruments.analytic import analytic_params
from ...instruments.kept_walks import WalkCache
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..recorder import Recorder

_KINDS: tuple[tuple[type, str], ...] = (
    (xt.TokenEmbedding, "embedding"),
    (xt.AbsolutePositionalEmbedding, "embedding"),
    (xt.Attention, "attention"),
    (xt.FeedForward, "feedforward"),
    (xt.LayerNorm, "norm"),
    (xt.RMSNorm, "norm"),
    (xt.ScaleNorm, "norm"),
    (xt.SimpleRMSNorm, "norm"),
)


def _kind(name: str, module: nn.Module) -> str | None:
    if name == "to_logits":
        return "logits"
    for cls, kind in _KINDS:
        if isinstance(module, cls):
            return kind
    return None


def count_params(model: nn.Module) -> dict[str, int]:
    """Parameter count per component, by walking the module tree; `other` catches the rest."""
    owners: list[tuple[str, str]] = []  # (prefix, kind), outermost first
    for name, module in model.named_modules():
        kind = _kind(name, module)
        if kind and not any(name.startswith(p + ".") for p, _ in owners):
            owners.append((name, kind))
    counts = dict.fromkeys((*PARAM_COMPONENTS, "other"), 0)
    for pname, p in model.named_parameters():
        kind = next((k for prefix, k in owners if pname.startswith(prefix + ".")), "other")
        counts[kind] += p.numel()
    library_total = sum(p.numel() for p in model.parameters())  # the plain count everyone quotes
    return {"total": sum(counts.values()), **counts, "library_total": library_total}


def _walked(cfg: ModelConfig) -> dict[str, int]:
    with fake_model(cfg) as (model, _):
        return count_params(model)


def counted_params(cfg: ModelConfig, walks: WalkCache | None = None) -> dict[str, int]:
    """The library's count for this config, with no weight memory allocated (per block where exact)."""
    return counted_with_note(cfg, walks)[0]


def counted_with_note(cfg: ModelConfig, walks: WalkCache | None = None) -> tuple[dict[str, int], str]:
    """(counts, how they were counted: the full walk or per block); kept in `walks`, so a sweep's base is
    counted once (a fresh cache where not given)."""
    walks = WalkCache() if walks is None else walks
    return walks.kept("params_routed", cfg, (), lambda: analytic_params(cfg, _walked, walks))


def params_summary(cfg: ModelConfig, walks: WalkCache | None = None) -> dict[str, Any]:
    """Counter and closed form side by side, plus what the DeepNorm realisation changes."""
    (counter, how), closed = counted_with_note(cfg, walks), closed_form_params(cfg)
    summary: dict[str, Any] = {
        **counter,
        "counted": how,
        "closed_form": closed,
        "closed_form_matches": all(counter[k] == closed[k] for k in closed)
        and counter["other"] == 0
        and counter["library_total"] == closed["total"],
        EMBEDDING_AND_LOGITS_SHARE: (counter["embedding"] + counter["logits"]) / counter["total"],
    }
    if cfg.layers.get("deepnorm"):
        pre_norm = ModelConfig(cfg.wrapper, {k: v for k, v in cfg.layers.items() if k != "deepnorm"})
        reference = counted_params(pre_norm, walks)
        summary["deepnorm"] = {
            "params_added_by_realisation": 0,
            "difference_vs_pre_norm": counter["total"] - reference["total"],
            "explained": "alpha and beta are constants (no parameter); post-LN has no final norm, so the "
            f"model has {reference['total'] - counter['total']} fewer parameters than the same "
            "variant with x-transformers' default pre-norm",
        }
    return summary


def summary(cfg: ModelConfig, seq_len: int, batch: int, walks: WalkCache | None = None) -> dict[str, Any]:
    return params_summary(cfg, walks)


def measure_params(variant: Variant, study: Study, walks: WalkCache | None = None) -> list[Record]:
    (counter, how), closed = counted_with_note(variant.config, walks), closed_form_params(variant.config)
    rec = Recorder(study.name, variant, "params")
    for component in ("total", *PARAM_COMPONENTS, "other"):
        rec.add(
            PARAMS,
            counter[component],
            Method.COUNTER,
            {"component": component},
            note=how if component == "total" else "",
        )
    for component, n in closed.items():
        rec.add(PARAMS, n, Method.CLOSED_FORM, {"component": component})
    rec.add(PARAMS, counter["library_total"], Method.LIBRARY_COUNT, {"component": Breakdown.TOTAL})
    rec.add(PARAMS_CLOSED_FORM_GAP, (counter["total"] - closed["total"]) / counter["total"], Method.DERIVED)
    share = (counter["embedding"] + counter["logits"]) / counter["total"]
    rec.add(EMBEDDING_AND_LOGITS_SHARE, share, Method.COUNTER)
    base = counted_params(study.base, walks)["total"]
    rec.add(PARAMS_DELTA_VS_BASE, counter["total"] / base - 1, Method.COUNTER)
    return rec.records
