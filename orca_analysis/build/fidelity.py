"""Fidelity: for every flag a variant sets, how the installed library honours it.

status: `native` (x-transformers does it as the design means), `realised` (the library lacks
it; orca-analysis implements it, `how` says exactly how), `unsupported` (refused, with why).
`notes_differ` says where the design notes describe the flag differently from what the code does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..study.kwargs import LAYERS, REALISED_FLAGS, resolve, xt_version
from ..study.schema import ModelConfig
from .deepnorm import deepnorm_alpha, deepnorm_beta

STATUSES = ("native", "realised", "unsupported")


@dataclass(frozen=True)
class FidelityEntry:
    flag: str
    value: object
    status: str
    how: str
    notes_differ: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _how_design_flags(cfg: ModelConfig) -> dict[str, tuple[str, str]]:
    """(how, notes_differ) for the flags of the design, worded for this variant."""
    h, dh, kv, d, depth = cfg.heads, cfg.dim_head, cfg.kv_heads, cfg.dim, cfg.depth
    alibi_h = cfg.layers.get("alibi_num_heads") or h
    rot = cfg.layers.get("rotary_emb_dim") or dh // 2
    in_kernel = bool(cfg.layers.get("alibi_pos_bias") and cfg.layers.get("alibi_in_kernel"))
    m = depth
    return {
        "num_tokens": (f"token embedding and logits tables of {cfg.num_tokens} rows", ""),
        "max_seq_len": (
            "stored by TransformerWrapper; with no absolute position table it sizes no tensor, "
            "and orca-analysis refuses workloads longer than it",
            "",
        ),
        "use_abs_pos_emb": (
            "no absolute position table is built; x-transformers would also drop it on its "
            "own because rotary embeddings are on",
            "",
        ),
        "dim": (f"model width {d}: embeddings, residual stream and feed-forward input/output", ""),
        "depth": (f"{depth} blocks of (attention, feed-forward)", ""),
        "heads": (
            f"{h} query heads of attn_dim_head={dh} channels each: the attention inner width is "
            f"heads x {dh} = {h * dh}, set by the head count rather than by dim",
            "the notes treat heads as splitting a fixed width; in x-transformers each head has its own fixed "
            f"width ({dh}), so more heads widen attention and add parameters and FLOPs",
        ),
        "alibi_pos_bias": (
            (
                "a linear distance penalty on the attention logits, with AlibiPositionalBias's "
                "slopes, applied inside FlexAttention's score_mod (alibi_in_kernel): no bias "
                "tensor is materialised"
            )
            if in_kernel
            else f"AlibiPositionalBias adds a linear distance penalty to the attention logits; under "
            f"attn_flash it is materialised as a dense float (batch x {h} x n x n) attn_mask "
            "passed to scaled_dot_product_attention",
            "",
        ),
        "alibi_num_heads": (
            f"ALiBi slopes on the first {alibi_h} of {h} heads; the other {h - alibi_h} heads get "
            "zero ALiBi bias and rely on rotary positions alone",
            "",
        ),
        "rotary_xpos": (
            f"RotaryEmbedding(use_xpos=True, scale_base=512) on the first {rot} of {dh} channels per "
            "head; xPos also scales queries and keys by a position-dependent decay",
            "the notes call it rotary positional encoding; xPos is rotary plus an exponential "
            "decay of attention with distance",
        ),
        "attn_flash": (
            "with alibi_in_kernel, self-attention runs torch's FlexAttention (compiled on CUDA, "
            "eager elsewhere) instead of scaled_dot_product_attention; no dense mask is passed"
            if in_kernel
            else "Attend calls torch.nn.functional.scaled_dot_product_attention, which picks a kernel at "
            "run time; with ALiBi a dense bias is passed as attn_mask, which the FlashAttention "
            "kernel does not accept, so another kernel runs"
            if cfg.layers.get("alibi_pos_bias")
            else "Attend calls torch.nn.functional.scaled_dot_product_attention, which picks a kernel at "
            "run time",
            "the notes promise Flash attention; FlexAttention is a fused, tiled kernel generated "
            "by torch.compile in the FlashAttention style, not the FlashAttention kernel itself"
            if in_kernel
            else "the notes promise Flash attention; with ALiBi on, the FlashAttention kernel is not "
            "eligible (dense bias mask)"
            if cfg.layers.get("alibi_pos_bias")
            else "",
        ),
        "deepnorm": (
            f"realised by orca-analysis (x-transformers {xt_version()} rejects 'deepnorm'): post-LN "
            f"sublayers (pre_norm=False), skip scaled by alpha=(2M)^(1/4)={deepnorm_alpha(m):.4f} "
            f"(scale_residual_constant), xavier_normal_ init with gain beta=(8M)^(-1/4)="
            f"{deepnorm_beta(m):.4f} on feed-forward, value and output projections and gain 1 on "
            f"query and key, M={m} (DeepNet, arXiv 2203.00555); adds no parameters; post-LN has no "
            "final norm",
            "",
        ),
        "alibi_in_kernel": (
            "realised by orca-analysis (build/flex_alibi.py): x-transformers' dense ALiBi bias is "
            f"not built; each attention layer calls FlexAttention with score_mod "
            f"score - slope[h] * |i - j| (the same slopes as AlibiPositionalBias, first "
            f"{alibi_h} of {h} heads, zero for the rest; queries at the last positions of the keys), "
            "a causal block mask and the same softmax scale, so no (batch x heads x n x n) tensor "
            "exists; adds no parameters. On CPU only the forward runs (FlexAttention has no CPU "
            "backward): training-step memory and speed need a GPU",
            "",
        ),
        "shift_tokens": (
            "token shift (ShiftTokens): each sublayer's input channels are split into "
            f"{_n_shifts(cfg)} groups and group i is taken from i positions earlier, mixing "
            "the previous token's features in at no parameter cost",
            "the notes describe it as shifting the sequence to form next-token targets; the "
            "library shifts feature channels between neighbouring positions instead",
        ),
        "attn_one_kv_head": (
            f"multi-query attention: keys and values are projected to {kv} head of {dh} "
            f"channels shared by all {h} query heads (K/V projections d x {kv * dh} "
            f"instead of d x {h * dh}; the KV cache shrinks {h // kv}x)",
            "",
        ),
    }


def _n_shifts(cfg: ModelConfig) -> int:
    shift = cfg.layers.get("shift_tokens", 0)
    return (max(shift) if isinstance(shift, list) else shift) + 1


def fidelity_entries(cfg: ModelConfig) -> list[FidelityEntry]:
    """One entry per key the variant sets, design flags with their specific wording."""
    specific = _how_design_flags(cfg)
    entries = []
    for key, value in [*cfg.wrapper.items(), *cfg.layers.items()]:
        dotted = f"{LAYERS}.{key}" if key in cfg.layers else key
        spec = resolve(dotted)
        status = "realised" if key in REALISED_FLAGS else "native"
        how, differ = specific.get(key, (f"passed to {spec.source} as {key}={value!r}", ""))
        if key in REALISED_FLAGS and not value:
            how = f"off: nothing to realise ({key}=false)"
        entries.append(FidelityEntry(key, value, status, how, differ))
    return entries
