"""Findings computed from the measurements, for the report's summary.

Each finding reads stored values through the query (numbers a measurement computed, never
re-derived here) and says where in the report its evidence lives; a finding whose results are
missing is simply absent. Each has an id and the declared metric it is about (catalog/findings.py
`FINDINGS`): the remedy catalogue names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.declared.flops import (
    PLAIN_MISSED_SHARE,
    TRAIN_STEP_CAUSAL,
    TRAIN_STEP_DENSE,
    TRAIN_STEP_ESTIMATE,
)
from ..catalog.declared.memory import ALIBI_BYTES_AT_PEAK, ALIBI_SHARE_OF_PEAK, MEMORY_REL_ERROR, PEAK_TRAIN
from ..catalog.declared.params import EMBEDDING_AND_LOGITS_SHARE, PARAMS
from ..catalog.declared.probes import KV_CACHE
from ..catalog.declared.speed import KV_ABLATION_CACHE_PASS
from ..catalog.declared.training import GRAD_NORM_FIRST_OVER_LAST
from ..catalog.findings import FINDINGS
from ..catalog.labels import Breakdown, Case
from ..catalog.vocabulary import Method
from ..kit.format import mib, share
from ..results.query import Results


@dataclass(frozen=True)
class Finding:
    """One finding of the report's summary: its id (catalog/findings.py), its sentence, where its evidence is."""

    id: str
    text: str
    anchor: str  # the report section that holds the evidence

    @property
    def metric(self) -> str:
        """The declared metric it is about (the remedy catalogue names findings by id)."""
        return FINDINGS[self.id]


def _base(study) -> str:
    return study.base_variant.variant_id


def _cached_decoding(results: Results, study) -> Finding | None:
    built = results.values(KV_CACHE, case=Case.AS_BUILT)
    if not built:
        return None
    failed = [v for v in built if v.value == 0]
    n, k = len({v.variant_id for v in built}), len({v.variant_id for v in failed})
    if not k:
        return Finding(
            "cached-decoding",
            f"Cached (KV) decoding matches a full recompute for all {n} variants.",
            "probes",
        )
    text = (
        f"Cached (KV) decoding fails for {k} of {n} variants ({failed[0].note[:110]}); "
        "x-transformers' generate() uses the cache by default, so the model as designed cannot serve "
        "with a KV cache until this is fixed."
    )
    compatible = results.values(KV_ABLATION_CACHE_PASS, variant=_base(study))
    dropped = next((str(v.get("dropped")) for v in compatible), "none")
    if dropped != "none":
        text += f" The base decodes correctly with the cache once {dropped.replace('+', ' and ')} are off."
    return Finding("cached-decoding", text, "probes")


def _alibi_memory(results: Results, study) -> Finding | None:
    shares = results.values(ALIBI_SHARE_OF_PEAK, variant=_base(study), method=Method.SIMULATED)
    if not shares:
        return None
    top = max(v.seq_len for v in shares)
    at = {
        "variant": _base(study),
        "seq_len": top,
        "batch": min(study.workloads.batch_sizes),
        "method": Method.SIMULATED,
    }
    alibi = results.number(ALIBI_BYTES_AT_PEAK, **at)
    peak = results.number(PEAK_TRAIN, category=Breakdown.TOTAL, **at)
    part = results.number(ALIBI_SHARE_OF_PEAK, **at)
    if not (alibi and peak and part is not None):
        return None
    gap = results.number(
        MEMORY_REL_ERROR,
        variant=_base(study),
        seq_len=top,
        quantity=ALIBI_BYTES_AT_PEAK,
        pair="closed_form_vs_simulated",
    )
    check = f"; the closed form's count differs by {gap:+.1%}" if gap is not None else ""
    return Finding(
        "alibi-dense-bias",
        f"At {top} tokens the ALiBi bias that x-transformers materialises per layer as a dense "
        f"(batch x heads x n x n) tensor holds {mib(alibi)} of the {mib(peak)} training-step peak, "
        f"{share(part)} of it (simulated: the tensors the tracker finds alive at that peak{check}); memory "
        "grows quadratically with length because of it.",
        "memory",
    )


def _plain_tools(results: Results, study) -> Finding | None:
    steps = results.values(
        TRAIN_STEP_CAUSAL, variant=_base(study), method=Method.COUNTER, component=Breakdown.TOTAL
    )
    if not steps:
        return None
    top = max(v.seq_len for v in steps)
    at = {"variant": _base(study), "seq_len": top, "batch": min(study.workloads.batch_sizes)}
    causal = results.number(TRAIN_STEP_CAUSAL, method=Method.COUNTER, component=Breakdown.TOTAL, **at)
    dense = results.number(TRAIN_STEP_DENSE, method=Method.COUNTER, component=Breakdown.TOTAL, **at)
    missed = results.number(PLAIN_MISSED_SHARE, tool="flop_counter_mode", **at)
    kaplan = results.number(TRAIN_STEP_ESTIMATE, method=Method.KAPLAN_6N, **at)
    if not (dense and causal) or missed is None:
        return None
    text = (
        f"At {top} tokens a base training step is {causal:.3g} FLOP (causal-aware; {dense:.3g} dense); "
        f"plain FlopCounterMode misses {share(missed)} of the dense count (attention)"
    )
    if kaplan:
        text += f", and the 6N rule of thumb gives only {kaplan:.3g}"
    return Finding("plain-tools", text + ".", "flops")


def _gradients(results: Results, study) -> Finding | None:
    found = results.values(GRAD_NORM_FIRST_OVER_LAST, variant=_base(study))
    if not found:
        return None
    depth = max(int(v.get("depth")) for v in found)
    step = max(int(v.get("step")) for v in found)
    ratios: dict[str, list[float]] = {}
    for v in found:
        if int(v.get("depth")) == depth and int(v.get("step")) == step:
            ratios.setdefault(v.get("norm"), []).append(v.value)
    listed = ", ".join(
        f"{k} {min(vs):.2g}" + (f" to {max(vs):.2g} over {len(vs)} seeds" if len(vs) > 1 else "")
        for k, vs in sorted(ratios.items())
    )
    return Finding(
        "gradient-health",
        f"Gradient health at depth {depth} (proxy): first-block over last-block gradient norm after a "
        f"short run is {listed}; a value far below 1 means early layers stop learning.",
        "training",
    )


def _params_share(results: Results, study) -> Finding | None:
    """The tables' share, and beside it what the study's own width and depth arms change (the comparison)."""
    base = _base(study)
    part = results.number(EMBEDDING_AND_LOGITS_SHARE, variant=base)
    total = results.number(PARAMS, variant=base, method=Method.COUNTER, component=Breakdown.TOTAL)
    if part is None or not total:
        return None
    text = f"The embedding and logits tables hold {share(part)} of the base model's {total:,.0f} parameters"
    arms = []
    for axis in ("dim", "depth"):
        values = {v.variant_id: v.swept[axis] for v in study.variants() if set(v.swept) >= {axis}}
        counts = {
            vid: results.number(PARAMS, variant=vid, method=Method.COUNTER, component=Breakdown.TOTAL)
            for vid in values
            if _only_axis(study, vid, axis)
        }
        counts = {vid: n for vid, n in counts.items() if n}
        if len({values[vid] for vid in counts}) > 1:
            lo, hi = min(counts, key=lambda vid: values[vid]), max(counts, key=lambda vid: values[vid])
            arms.append(
                f"{axis} {values[lo]} to {values[hi]} takes the total from {counts[lo]:,.0f} to "
                f"{counts[hi]:,.0f} (x{counts[hi] / counts[lo]:.2f})"
            )
    if arms:
        text += "; across the study's own arms, " + " and ".join(arms)
    return Finding("embedding-share", text + ".", "params")


def _only_axis(study, vid: str, axis: str) -> bool:
    """The variant differs from the base on `axis` alone (or is the base)."""
    base = study.base_variant.swept
    v = next(x for x in study.variants() if x.variant_id == vid)
    return all(v.swept[k] == base[k] for k in base if k != axis)


def _heads_width(results: Results, study) -> Finding | None:
    """Heads that widen attention instead of splitting a fixed width (the notes' reading)."""
    wide = [v for v in study.variants() if v.config.heads * v.config.dim_head != v.config.dim]
    if not wide:
        return None
    base = _base(study)
    at = {"method": Method.COUNTER, "component": "attention"}
    ref = results.number(PARAMS, variant=base, **at)
    parts = []
    for v in wide:
        n = results.number(PARAMS, variant=v.variant_id, **at)
        if n is not None and ref:
            inner = v.config.heads * v.config.dim_head
            parts.append(
                f"{v.variant_id}: attention {inner} wide for dim {v.config.dim}, "
                f"{n:,.0f} attention parameters ({n / ref:.2f}x the base's)"
            )
    if not parts:
        return None
    return Finding(
        "heads-widen-attention",
        "x-transformers gives every head attn_dim_head channels of its own, so where heads x "
        "attn_dim_head differs from dim the head count resizes attention instead of splitting the width"
        + (" as the notes assume" if study.names_notes else "")
        + ": "
        + "; ".join(parts)
        + ".",
        "params",
    )


FINDERS = (_cached_decoding, _alibi_memory, _plain_tools, _gradients, _params_share, _heads_width)


def key_findings(results: Results, study) -> list[Finding]:
    found = (f(results, study) for f in FINDERS)
    return [f for f in found if f]
