"""Closed-form parameter counts of an x-transformers TransformerWrapper + Decoder.

Notation: V vocabulary, d dim, L depth, h heads, h_kv kv heads, d_h head dim,
m feed-forward multiplier (inner width f = int(d * m)).
Covered: MHA/GQA/MQA, head dim, value head dim, feed-forward mult / GLU / no_bias, tied
embeddings, absolute positions, pre-norm (final norm) or post-norm (DeepNorm), LayerNorm/RMSNorm.
Anything else a variant sets is not modelled: the counter still counts it, and the report
shows the gap between the two instead of hiding it.
"""

from __future__ import annotations

from ..study.schema import ModelConfig
from .registry import formulas, register_formula

XT = "x-transformers 2.x module definitions (TransformerWrapper, Attention, FeedForward, LayerNorm)"


def _has_abs_pos_emb(cfg: ModelConfig) -> bool:
    # x-transformers drops the absolute table when rotary / relative positions are on.
    layers = cfg.layers
    auto_off = bool(
        layers.get("rel_pos_bias")
        or layers.get("rotary_pos_emb")
        or layers.get("rotary_xpos")
        or layers.get("polar_pos_emb")
    )
    disabled = layers.get("disable_abs_pos_emb")
    disabled = auto_off if disabled is None else disabled
    return bool(cfg.wrapper.get("use_abs_pos_emb", True)) and not disabled and cfg.max_seq_len > 0


@register_formula("params.embedding", "Vaswani et al. 2017 (arXiv 1706.03762) sec. 3.4; " + XT)
def embedding_params(cfg: ModelConfig) -> int:
    d = cfg.dim
    tokens = cfg.num_tokens * d  # token table (V, d)
    positions = cfg.max_seq_len * d if _has_abs_pos_emb(cfg) else 0  # (max_seq_len, d)
    return tokens + positions


@register_formula(
    "params.attention",
    "Shazeer 2019 (arXiv 1911.02150) MQA; Ainslie et al. 2023 (arXiv 2305.13245) GQA; " + XT,
)
def attention_params(cfg: ModelConfig) -> int:
    d, h, kv, dh = cfg.dim, cfg.heads, cfg.kv_heads, cfg.dim_head
    dv = cfg.layers.get("attn_value_dim_head") or dh
    q = d * h * dh  # W_q: (d, h*d_h), no bias
    k = d * kv * dh  # W_k: (d, h_kv*d_h)
    v = d * kv * dv  # W_v: (d, h_kv*d_v)
    out = h * dv * d  # W_o: (h*d_v, d)
    return cfg.depth * (q + k + v + out)


@register_formula(
    "params.feedforward", "Vaswani et al. 2017 sec. 3.3; Shazeer 2020 (arXiv 2002.05202) GLU; " + XT
)
def feedforward_params(cfg: ModelConfig) -> int:
    d = cfg.dim
    f = int(d * cfg.layers.get("ff_mult", 4))
    bias = 0 if cfg.layers.get("ff_no_bias") else 1
    if cfg.layers.get("ff_glu"):
        up = d * 2 * f + 2 * f  # GLU proj (d, 2f); x-transformers keeps its bias even with no_bias
        up += f if cfg.layers.get("ff_glu_mult_bias") else 0
    else:
        up = d * f + bias * f  # (d, f) + b
    down = f * d + bias * d  # (f, d) + b
    return cfg.depth * (up + down)


@register_formula(
    "params.norm", "Ba et al. 2016 (arXiv 1607.06450); x-transformers LayerNorm has a gain and no bias"
)
def norm_params(cfg: ModelConfig) -> int:
    d = cfg.dim
    per_sublayer = 2 * cfg.depth * d  # one gain vector (d,) per attention and feed-forward sublayer
    pre_norm = cfg.layers.get("pre_norm", True) and not cfg.layers.get("deepnorm")
    final = d if pre_norm and cfg.layers.get("pre_norm_has_final_norm", True) else 0
    return per_sublayer + final


@register_formula("params.logits", "Press & Wolf 2017 (arXiv 1608.05859) on tying; " + XT)
def logits_params(cfg: ModelConfig) -> int:
    if cfg.wrapper.get("tie_embedding"):
        return 0  # shares the token table
    out = cfg.wrapper.get("logits_dim") or cfg.num_tokens
    return cfg.dim * out  # W_out: (d, V), no bias


PARAM_COMPONENTS = ("embedding", "attention", "feedforward", "norm", "logits")


def closed_form_params(cfg: ModelConfig) -> dict[str, int]:
    """Per-component closed form and their total."""
    parts = {name: int(f(cfg)) for name, f in formulas("params").items()}
    parts = {name: parts[name] for name in PARAM_COMPONENTS}
    return {"total": sum(parts.values()), **parts}
