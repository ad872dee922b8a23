"""Which x-transformers designs have identical blocks, so that a count or a simulation at a few small depths
extrapolates exactly to the real one (per_block.py): an allow-list of the settings every block applies alike,
and the keys that set a custom layer pattern. Anything else refuses the shortcut, with the reason."""

from __future__ import annotations

from ..study.kwargs import LAYERS
from ..study.schema import ModelConfig

SAFE_WRAPPER = {
    "num_tokens",
    "max_seq_len",
    "use_abs_pos_emb",
    "tie_embedding",
    "logits_dim",
    "emb_dim",
    "scaled_sinu_pos_emb",
    "l2norm_embed",
    "post_emb_norm",
    "emb_dropout",
}
SAFE_LAYERS = {
    "dim",
    "depth",
    "heads",
    "alibi_pos_bias",
    "alibi_num_heads",
    "rotary_pos_emb",
    "rotary_xpos",
    "rotary_emb_dim",
    "rotary_xpos_scale_base",
    "rotary_interpolation_factor",
    "rotary_base_rescale_factor",
    "attn_flash",
    "attn_one_kv_head",
    "attn_kv_heads",
    "attn_dim_head",
    "attn_value_dim_head",
    "attn_attend_sdp_kwargs",
    "attn_dropout",
    "attn_qk_norm",
    "ff_mult",
    "ff_glu",
    "ff_swish",
    "ff_no_bias",
    "ff_relu_squared",
    "ff_dropout",
    "pre_norm",
    "use_rmsnorm",
    "use_scalenorm",
    "use_simple_rmsnorm",
    "deepnorm",
    "shift_tokens",
}
PATTERN_KEYS = {
    "custom_layers",
    "par_ratio",
    "sandwich_coef",
    "macaron",
    "layer_dropout",
    "cross_attend",
    "layers_execute_order",
    "weight_tie_layers",
    "residual_attn",
    "unet_skips",
}


def refusal(cfg: ModelConfig, depths: tuple[int, ...]) -> str:
    """Why the blocks of `cfg` cannot be taken as identical ("" when they can)."""
    for safe, values in ((SAFE_WRAPPER, cfg.wrapper), (SAFE_LAYERS, cfg.layers)):
        for key, value in values.items():
            if key in PATTERN_KEYS:
                if value:
                    return f"{key}={value!r} sets a custom layer pattern"
            elif isinstance(value, (list, tuple)):
                return f"per-layer setting {key}={list(value)}: the blocks differ"
            elif key not in safe:
                return f"'{key}' is not on the allow-list of block-uniform settings"
    if cfg.depth <= depths[-1]:
        return f"depth {cfg.depth} <= {depths[-1]} (the check depth): nothing to extrapolate"
    return ""


def at_depth(cfg: ModelConfig, depth: int) -> ModelConfig:
    return cfg.with_values({(LAYERS, "depth"): depth})
