"""Configs derived from a variant: a flag switched off, a norm layout, a positional scheme, KV heads.

The ablations, the probes' attribution cases and cached-decoding comparisons all build these; each
returns a new ModelConfig and leaves the variant's own alone.
"""

from __future__ import annotations

from ..study.schema import ModelConfig

FLAGS_OFF = {
    "alibi_pos_bias": False,
    "rotary_xpos": False,
    "shift_tokens": 0,
    "deepnorm": False,
    "attn_one_kv_head": False,
    "attn_flash": False,
}  # the Orca flags, each switched off
NORMS = ("pre_norm", "post_norm", "deepnorm")
_NORM_KEYS = ("deepnorm", "pre_norm", "scale_residual_constant")


def without(cfg: ModelConfig, flags: tuple[str, ...]) -> ModelConfig:
    """`cfg` with each of `flags` that it sets switched off."""
    return cfg.with_values({("attn_layers", f): FLAGS_OFF[f] for f in flags if cfg.get(f)})


def norm_config(cfg: ModelConfig, norm: str) -> ModelConfig:
    """pre_norm (x-transformers' default), post_norm (DeepNorm's layout without alpha, beta) or deepnorm."""
    layers = {k: v for k, v in cfg.layers.items() if k not in _NORM_KEYS}
    if norm == "post_norm":
        layers["pre_norm"] = False
    elif norm == "deepnorm":
        layers["deepnorm"] = True
    return ModelConfig(cfg.wrapper, layers)


def kv_config(cfg: ModelConfig, one_kv_head: bool) -> ModelConfig:
    """One KV head shared by every query head (multi-query), or one per query head (multi-head)."""
    layers = {k: v for k, v in cfg.layers.items() if k != "attn_kv_heads"}
    layers["attn_one_kv_head"] = one_kv_head
    return ModelConfig(cfg.wrapper, layers)
