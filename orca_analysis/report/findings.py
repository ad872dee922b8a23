"""Key findings computed from the results: the facts a design review should hear first.

Each is a sentence with its numbers and the report anchor holding the evidence; a finding whose
results are missing is simply absent.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .sections import mib, ok_rows, pick, share, value


def _cached_decoding(results: pd.DataFrame) -> dict[str, Any] | None:
    probes = results[(results.get("measurement") == "probes") & (results.get("metric") == "kv_cache")]
    built = probes[probes["category"].fillna("").str.startswith("case=as_built")]
    if built.empty:
        return None
    failed = built[built["status"] == "error"]
    n, k = built["variant_id"].nunique(), failed["variant_id"].nunique()
    if not k:
        return {
            "text": f"Cached (KV) decoding matches a full recompute for all {n} variants.",
            "anchor": "quality",
        }
    text = (
        f"Cached (KV) decoding fails for {k} of {n} variants ({str(failed['error'].iloc[0])[:110]}); "
        "x-transformers' generate() uses the cache by default, so the model as designed cannot serve "
        "with a KV cache until this is fixed."
    )
    kv = pick(ok_rows(results, "speed"), metric="kv_ablation_cache_agreement")
    dropped = kv["category"].str.extract(r"dropped=([\w+]+)")[0].dropna() if not kv.empty else kv
    if len(dropped) and dropped.iloc[0] != "none":
        text += f" The base decodes correctly with the cache once {dropped.iloc[0].replace('+', ' and ')} are off."
    return {"text": text, "anchor": "quality"}


def _alibi_memory(results: pd.DataFrame) -> dict[str, Any] | None:
    rows = ok_rows(results, "memory")
    if rows.empty:
        return None
    top = rows["seq_len"].max()
    terms = pick(rows, variant_id="base", metric="activation_term", seq_len=top)
    peak = value(rows, variant_id="base", metric="peak_train", method="simulated", seq_len=top, category="")
    if terms.empty or not peak:
        return None
    alibi = terms[terms["category"].str.startswith("alibi")]["value"].sum()
    return {
        "text": f"At {int(top)} tokens the ALiBi bias that x-transformers materialises per layer as a dense "
        f"(batch x heads x n x n) tensor holds {mib(alibi)}, {share(alibi / peak)} of the "
        f"{mib(peak)} training-step peak (simulated); memory grows quadratically with length because "
        "of it.",
        "anchor": "memory",
    }


def _plain_tools(results: pd.DataFrame) -> dict[str, Any] | None:
    rows = ok_rows(results, "flops")
    if rows.empty:
        return None
    top = rows["seq_len"].max()
    whole = pick(rows, variant_id="base", seq_len=top, category="")
    dense = value(whole, metric="train_step_dense", method="counter")
    plain = value(whole, metric="train_step_dense", method="counter_plain")
    causal = value(whole, metric="train_step_causal", method="counter")
    kaplan = value(whole, metric="train_step", method="kaplan_6n")
    if not (dense and plain and causal):
        return None
    text = (
        f"At {int(top)} tokens a base training step is {causal:.3g} FLOP (causal-aware; {dense:.3g} dense); "
        f"plain FlopCounterMode misses {share(1 - plain / dense)} of it (attention)"
    )
    if kaplan:
        text += f", and the 6N rule of thumb gives only {kaplan:.3g}"
    return {"text": text + ".", "anchor": "flops"}


def _gradients(results: pd.DataFrame) -> dict[str, Any] | None:
    rows = pick(ok_rows(results, "training"), variant_id="base", metric="grad_norm_first_over_last")
    if rows.empty:
        return None
    from ..measure._recorder import parse_category

    parts = pd.DataFrame([parse_category(c) for c in rows["category"]], index=rows.index).join(rows["value"])
    parts["depth"], parts["step"] = parts["depth"].astype(int), parts["step"].astype(int)
    deep = parts[(parts["depth"] == parts["depth"].max()) & (parts["step"] == parts["step"].max())]
    ratios = dict(zip(deep["norm"], deep["value"], strict=True))
    if not ratios:
        return None
    listed = ", ".join(f"{k} {v:.2g}" for k, v in sorted(ratios.items()))
    return {
        "text": f"Gradient health at depth {parts['depth'].max()} (proxy): first-block over last-block "
        f"gradient norm after a short run is {listed}; a value far below 1 means early layers stop "
        "learning.",
        "anchor": "quality",
    }


def _params_share(results: pd.DataFrame) -> dict[str, Any] | None:
    rows = pick(ok_rows(results, "params"), variant_id="base", method="counter")
    total = value(rows, metric="total")
    if not total:
        return None
    emb = (value(rows, metric="embedding") or 0) + (value(rows, metric="logits") or 0)
    return {
        "text": f"The embedding and logits tables hold {share(emb / total)} of the base model's "
        f"{total:,.0f} parameters: at this size, width and depth change less than the vocabulary does.",
        "anchor": "params",
    }


def key_findings(results: pd.DataFrame, study) -> list[dict[str, Any]]:
    if results.empty or "measurement" not in results:
        return []
    found = (f(results) for f in (_cached_decoding, _alibi_memory, _plain_tools, _gradients, _params_share))
    return [f for f in found if f]
