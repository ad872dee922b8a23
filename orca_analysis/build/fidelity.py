"""Fidelity: for every flag a variant sets, how the installed library honours it.

status: `native` (x-transformers does it as the design means), `realised` (the library lacks
it; orca-analysis implements it, `how` says exactly how), `unsupported` (refused, with why).
`how` is worded from the model x-transformers builds (build/describe.py), for any design: what a
flag does to this build, not what it was meant to do. `notes_differ` says where the Orca design
notes describe the flag differently from what the code does; only a study that names the notes'
catalogue gets it (`notes=True`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import BuildError
from ..study.kwargs import LAYERS, REALISED_FLAGS, resolve, xt_version
from ..study.schema import ModelConfig
from .deepnorm import deepnorm_alpha, deepnorm_beta
from .describe import Built, attention_kind, describe

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


def _positions(b: Built) -> str:
    return f"positions in this build: {b.positions}"


def _abs_pos(b: Built, cfg: ModelConfig) -> str:
    if b.abs_pos == "learned":
        return (
            f"a learned absolute position table is built: {b.max_seq_len} x {b.dim} = {b.abs_pos_params:,} "
            "parameters, added to the token embeddings"
        )
    if b.abs_pos:
        return "sinusoidal absolute positions are added to the token embeddings (no parameters)"
    if cfg.wrapper.get("use_abs_pos_emb", True):
        return (
            f"no absolute position table is built: x-transformers drops it on its own when the layers "
            f"carry positions ({b.positions})"
        )
    return f"no absolute position table is built; {_positions(b)}"


def _kv(b: Built) -> str:
    if b.kv_heads == b.heads:
        return attention_kind(b.heads, b.kv_heads)
    return (
        f"{attention_kind(b.heads, b.kv_heads)}; K/V projections d x {b.kv_heads * b.dim_head} instead of "
        f"d x {b.heads * b.dim_head}, and the KV cache is {b.heads // b.kv_heads}x smaller than MHA's"
    )


def _ff(b: Built, key: str) -> str:
    d_out = b.ff_in[1]  # (d, out): a GLU's projection holds the value and the gate
    kind = (
        f"a GLU: the input projection is d x {d_out} (value and gate, {d_out // 2} each)"
        if b.ff_glu
        else f"input projection d x {d_out}"
    )
    biases = ", ".join(b.ff_biases) or "none"
    text = f"feed-forward in this build: {kind}, activation {b.ff_act}, biases on: {biases}"
    if key == "ff_no_bias" and b.ff_glu and "input projection" in b.ff_biases:
        text += " (x-transformers' ff_no_bias leaves the GLU's input bias on)"
    return text


def _how(cfg: ModelConfig, b: Built) -> dict[str, str]:
    """How each flag is honoured, worded from the built model `b`."""
    h, dh, d, depth = b.heads, b.dim_head, b.dim, cfg.depth
    alibi = bool(b.alibi_heads)
    in_kernel = b.alibi_in_kernel
    sdpa = "Attend calls torch.nn.functional.scaled_dot_product_attention, which picks a kernel at run time"
    rotary = _positions(b) + (
        ""
        if b.rotary_dims != dh // 2 or "rotary_emb_dim" in cfg.layers
        else f" ({b.rotary_dims} = x-transformers' default rotary_emb_dim, attn_dim_head / 2)"
    )
    shift = (
        (
            f"token shift (ShiftTokens): each sublayer's input channels are split into {len(b.shifts)} groups "
            f"and the group with offset k is taken from k positions earlier (offsets {list(b.shifts)}), at no "
            "parameter cost"
        )
        if b.shifts and max(b.shifts) > 0
        else "off: no token shift is built"
    )
    how = {
        "num_tokens": f"token embedding table of {b.vocab_rows} rows; "
        + (
            "the logits reuse it (tied)" if b.tied else f"a separate logits projection of {b.vocab_rows} rows"
        ),
        "tie_embedding": "the logits reuse the token embedding table" if b.tied else "separate logits table",
        "max_seq_len": f"sizes the learned absolute position table ({b.max_seq_len} rows); orca-analysis refuses "
        "workloads longer than it"
        if b.abs_pos == "learned"
        else "stored by TransformerWrapper; with no learned "
        "position table it sizes no tensor, and orca-analysis refuses workloads longer than it",
        "use_abs_pos_emb": _abs_pos(b, cfg),
        "dim": f"model width {d}: embeddings, residual stream and feed-forward input/output",
        "depth": f"{depth} blocks of (attention, feed-forward)",
        "heads": f"{h} query heads of attn_dim_head={dh} channels each: the attention inner width is "
        f"heads x {dh} = {h * dh}, set by the head count rather than by dim",
        "attn_dim_head": f"each head has {dh} channels: attention is {h} x {dh} = {h * dh} wide",
        "attn_kv_heads": _kv(b),
        "attn_one_kv_head": _kv(b),
        "rotary_pos_emb": rotary,
        "rotary_emb_dim": rotary,
        "rotary_xpos": f"RotaryEmbedding(use_xpos=True) on the first {b.rotary_dims} of {dh} channels per head; "
        "xPos also scales queries and keys by a position-dependent decay",
        "alibi_pos_bias": "a linear distance penalty on the attention logits, with AlibiPositionalBias's slopes, "
        "applied inside FlexAttention's score_mod (alibi_in_kernel): no bias tensor is materialised"
        if in_kernel
        else f"AlibiPositionalBias adds a linear distance penalty to the attention logits; under attn_flash it "
        f"is materialised as a dense float (batch x {h} x n x n) attn_mask passed to scaled_dot_product_attention",
        "alibi_num_heads": f"ALiBi slopes on the first {b.alibi_heads} of {h} heads; the other "
        f"{h - b.alibi_heads} heads get zero ALiBi bias"
        + (f" and rely on {'xPos ' if b.xpos else ''}rotary positions alone" if b.rotary_dims else ""),
        "attn_flash": "with alibi_in_kernel, self-attention runs torch's FlexAttention (compiled on CUDA, eager "
        "elsewhere) instead of scaled_dot_product_attention; no dense mask is passed"
        if in_kernel
        else "attention is computed in plain PyTorch (einsum, softmax), which materialises the (batch x heads x n "
        "x n) scores"
        if not b.flash
        else f"{sdpa}; with ALiBi a dense bias is passed as attn_mask, which the FlashAttention kernel does not "
        "accept, so another kernel runs"
        if alibi
        else sdpa,
        "deepnorm": f"realised by orca-analysis (x-transformers {xt_version()} rejects 'deepnorm'): post-LN "
        f"sublayers (pre_norm=False), skip scaled by alpha=(2M)^(1/4)={deepnorm_alpha(depth):.4f} "
        f"(scale_residual_constant), xavier_normal_ init with gain beta=(8M)^(-1/4)={deepnorm_beta(depth):.4f} "
        f"on feed-forward, value and output projections and gain 1 on query and key, M={depth} (DeepNet, arXiv "
        "2203.00555); adds no parameters; post-LN has no final norm",
        "alibi_in_kernel": "realised by orca-analysis (build/flex_alibi.py): x-transformers' dense ALiBi bias is "
        "not built; each attention layer calls FlexAttention with score_mod score - slope[h] * |i - j| (the same "
        f"slopes as AlibiPositionalBias, first {b.alibi_heads} of {h} heads, zero for the rest; queries at the "
        "last positions of the keys), a causal block mask and the same softmax scale, so no (batch x heads x n x "
        "n) tensor exists; adds no parameters. On CPU only the forward runs (FlexAttention has no CPU backward): "
        "training-step memory and speed need a GPU",
        "shift_tokens": shift,
        "pre_norm": f"{'pre' if b.pre_norm else 'post'}-norm blocks with {b.norm}",
    }
    off = {
        "alibi_pos_bias": not b.alibi_heads,
        "alibi_num_heads": not b.alibi_heads,
        "rotary_xpos": not b.xpos,
    }
    for key, is_off in off.items():  # set, but nothing of it is built
        if is_off:
            how[key] = f"off: nothing of it is built ({_positions(b)})"
    for key in ("use_rmsnorm", "use_scalenorm", "use_simple_rmsnorm", "use_dynamic_tanh"):
        how[key] = f"the blocks' norms are {b.norm} ({'pre' if b.pre_norm else 'post'}-norm)"
    for key in ("ff_glu", "ff_swish", "ff_relu_squared", "ff_no_bias", "ff_mult"):
        how[key] = _ff(b, key)
    return how


# Where the Orca design notes word a flag differently from what the code does (notes=True only).
_NOTES_DIFFER = {
    "heads": lambda b: (
        "the notes treat heads as splitting a fixed width; in x-transformers each head has its own "
        f"fixed width ({b.dim_head}), so more heads widen attention and add parameters and FLOPs"
    ),
    "rotary_xpos": lambda b: (
        "the notes call it rotary positional encoding; xPos is rotary plus an exponential "
        "decay of attention with distance"
    ),
    "attn_flash": lambda b: (
        "the notes promise Flash attention; FlexAttention is a fused, tiled kernel generated by "
        "torch.compile in the FlashAttention style, not the FlashAttention kernel itself"
        if b.alibi_in_kernel
        else "the notes promise Flash attention; with ALiBi on, the FlashAttention kernel is not eligible (dense "
        "bias mask)"
        if b.alibi_heads
        else ""
    ),
    "shift_tokens": lambda b: (
        "the notes describe it as shifting the sequence to form next-token targets; the "
        "library shifts feature channels between neighbouring positions instead"
        if b.shifts
        else ""
    ),
}


def fidelity_entries(cfg: ModelConfig, notes: bool = False) -> list[FidelityEntry]:
    """One entry per key the variant sets, worded from the built model; `notes`: the study names the Orca
    design notes' catalogue, so where the notes differ is said too."""
    try:
        built = describe(cfg)
    except BuildError as exc:  # nothing to read the wording from: each flag says it was not built
        return [
            FidelityEntry(k, v, "unsupported", f"not built: {exc}")
            for k, v in [*cfg.wrapper.items(), *cfg.layers.items()]
        ]
    how = _how(cfg, built)
    entries = []
    for key, value in [*cfg.wrapper.items(), *cfg.layers.items()]:
        dotted = f"{LAYERS}.{key}" if key in cfg.layers else key
        spec = resolve(dotted)
        status = "realised" if key in REALISED_FLAGS else "native"
        text = how.get(key, f"passed to {spec.source} as {key}={value!r}")
        if key in REALISED_FLAGS and not value:
            text = f"off: nothing to realise ({key}=false)"
        differ = _NOTES_DIFFER[key](built) if notes and key in _NOTES_DIFFER else ""
        entries.append(FidelityEntry(key, value, status, text, differ))
    return entries
