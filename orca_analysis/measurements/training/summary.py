"""What `training` would train for a variant, as `inspect` shows it (nothing is trained here)."""

from __future__ import annotations

from typing import Any

from ...catalog.declared.training import PROXY_PARAMS, TRAIN_FLOPS_PER_TOKEN
from ...formulas.memory import kv_cache_bytes
from ...instruments.proxy import describe, proxy_config, proxy_rule, quality_scale
from ...study.schema import ModelConfig
from ..params.run import counted_params
from .run import FLOPS_FORMULA, flops_per_token


def summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
    """What `training` would train for this variant (nothing is trained here)."""
    scale = quality_scale()
    proxy = proxy_config(cfg, scale)
    return {
        "scale": scale.name,
        "proxy_rule": proxy_rule(scale),
        "proxy": describe(proxy),
        PROXY_PARAMS: counted_params(proxy)["library_total"],
        TRAIN_FLOPS_PER_TOKEN: flops_per_token(proxy, scale.seq_len),
        "flops_formula": FLOPS_FORMULA,
        "tokens_per_run": scale.tokens_per_run,
        "seeds": list(scale.seeds),
        "kv_cache_bytes_full_bf16": kv_cache_bytes(cfg, seq_len, batch, "bfloat16"),
    }


def summary_text(s: dict[str, Any]) -> str:
    return (
        f"training ({s['scale']} scale): {s['proxy_rule']}\n  proxy {s['proxy']}, {s[PROXY_PARAMS]:,} params, "
        f"{s[TRAIN_FLOPS_PER_TOKEN]:.3g} FLOP/token ({s['flops_formula']}), "
        f"{s['tokens_per_run']:,} tokens per run, seeds {s['seeds']}"
    )
