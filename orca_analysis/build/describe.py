"""What a variant is, read from the model x-transformers builds: the attention kind, the positional
schemes, the norms, the feed-forward and the tables, for any design.

Everything here comes from the built modules (under FakeTensorMode: no storage), so a flag the library
ignores or overrides (an absolute position table dropped because rotary is on, `ff_no_bias` leaving a
GLU's input bias) is described as it is built. One exception: ALiBi inside FlexAttention
(`alibi_in_kernel`, realised by orca-analysis) is read from the config, with the heads it covers.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from x_transformers import x_transformers as xt

from ..study.kwargs import LAYERS
from ..study.schema import ModelConfig
from .builder import fake_model


@dataclass(frozen=True)
class Built:
    """The facts of one built variant (its blocks are alike: read from the first of each kind)."""

    dim: int
    heads: int
    kv_heads: int
    dim_head: int
    max_seq_len: int
    vocab_rows: int
    tied: bool  # the logits reuse the token embedding
    abs_pos: str  # "learned", "sinusoidal" or "" (none)
    abs_pos_params: int
    rotary_dims: int  # channels per head that rotary rotates (0: no rotary)
    xpos: bool
    alibi_heads: int  # heads with ALiBi slopes (0: no dense ALiBi module)
    alibi_in_kernel: bool  # ALiBi in FlexAttention's score_mod (realised by orca-analysis)
    rel_pos: str  # another relative bias module's class ("" for none or ALiBi)
    shifts: tuple[int, ...]  # ShiftTokens' offsets (() without token shift)
    norm: str  # class of the blocks' norms
    pre_norm: bool
    ff_in: tuple[int, int]  # (in, out) of the feed-forward's first projection
    ff_act: str
    ff_glu: bool
    ff_biases: tuple[str, ...]  # which feed-forward projections carry a bias
    flash: bool  # Attend calls scaled_dot_product_attention

    @property
    def attention_kind(self) -> str:
        return attention_kind(self.heads, self.kv_heads)

    @property
    def positions(self) -> str:
        return position_scheme(self)


def attention_kind(heads: int, kv_heads: int) -> str:
    """MHA, GQA with its group size, or MQA (the names of Shazeer 2019 and Ainslie et al. 2023)."""
    if kv_heads == heads:
        return f"multi-head attention (MHA): {heads} query heads, each with its own key/value head"
    if kv_heads == 1:
        return f"multi-query attention (MQA): 1 key/value head shared by all {heads} query heads"
    return (
        f"grouped-query attention (GQA): {kv_heads} key/value heads, each shared by a group of "
        f"{heads // kv_heads} query heads"
    )


def position_sources(b: Built) -> list[str]:
    """Every source of position information the built model has (none: only the causal mask orders tokens)."""
    parts = []
    if b.abs_pos == "learned":
        parts.append(
            f"learned absolute positions ({b.max_seq_len} x {b.dim} table, {b.abs_pos_params:,} parameters)"
        )
    elif b.abs_pos:
        parts.append("sinusoidal absolute positions (no parameters)")
    if b.rotary_dims:
        kind = "xPos rotary (rotary with a decay)" if b.xpos else "rotary"
        parts.append(f"{kind} on {b.rotary_dims} of {b.dim_head} channels per head")
    if b.alibi_heads:
        where = " in FlexAttention's score_mod" if b.alibi_in_kernel else ""
        parts.append(f"ALiBi on {b.alibi_heads} of {b.heads} heads{where}")
    if b.rel_pos:
        parts.append(f"a learned relative bias ({b.rel_pos})")
    if b.shifts and max(b.shifts) > 0:
        back = max(b.shifts)
        parts.append(f"token shift (channels from up to {back} position{'s' if back > 1 else ''} back)")
    return parts


def position_scheme(b: Built) -> str:
    return " + ".join(position_sources(b)) or "none: only the causal mask orders the tokens"


def _first(model: nn.Module, cls: type) -> nn.Module | None:
    return next((m for m in model.modules() if isinstance(m, cls)), None)


def _ff(model: nn.Module) -> tuple[tuple[int, int], str, bool, tuple[str, ...]]:
    ff = _first(model, xt.FeedForward)
    if ff is None:
        return (0, 0), "", False, ()
    linears = [m for m in ff.modules() if isinstance(m, nn.Linear)]  # (proj_in, proj_out) in order
    glu = _first(ff, xt.GLU)
    act = glu.act if glu is not None else next((m for m in ff.ff[0] if not isinstance(m, nn.Linear)), None)
    names = ("input projection", "output projection")
    biases = tuple(name for name, lin in zip(names, linears, strict=False) if lin.bias is not None)
    first = linears[0]
    return (first.in_features, first.out_features), type(act).__name__, glu is not None, biases


def describe(cfg: ModelConfig) -> Built:
    """Build `cfg` at depth 1 (every block is built alike) with no storage and read what it is."""
    one = cfg.with_values({(LAYERS, "depth"): 1})
    with fake_model(one) as (model, _):
        layers = model.attn_layers
        attn = _first(model, xt.Attention)
        dim_head = attn.to_q.weight.shape[0] // attn.heads  # to_q: (heads * dim_head, dim)
        pos = model.pos_emb
        learned = isinstance(pos, xt.AbsolutePositionalEmbedding)
        rotary = layers.rotary_pos_emb
        rel = layers.rel_pos
        alibi = rel.slopes.shape[0] if isinstance(rel, xt.AlibiPositionalBias) else 0  # slopes: (h, 1, 1)
        in_kernel = bool(cfg.layers.get("alibi_in_kernel"))
        shift = _first(model, xt.ShiftTokens)
        norms = layers.layers[0][
            0
        ]  # block 0: (norms, attention, residual); norms: pre, post-branch, post-main
        norm = next((n for n in norms if n is not None), None)
        ff_in, act, glu, biases = _ff(model)
        return Built(
            dim=cfg.dim,
            heads=attn.heads,
            kv_heads=attn.to_k.weight.shape[0] // dim_head,
            dim_head=dim_head,
            max_seq_len=model.max_seq_len,
            vocab_rows=model.token_emb.emb.weight.shape[0],
            tied=not isinstance(model.to_logits, nn.Module),  # tied: a function of the embedding's weight
            abs_pos="learned"
            if learned
            else "sinusoidal"
            if isinstance(pos, xt.ScaledSinusoidalEmbedding)
            else "",
            abs_pos_params=sum(p.numel() for p in pos.parameters()) if isinstance(pos, nn.Module) else 0,
            rotary_dims=2 * rotary.inv_freq.shape[0] if rotary is not None else 0,  # inv_freq: (rot_dim / 2,)
            xpos=rotary is not None and rotary.scale is not None,
            alibi_heads=alibi
            if alibi
            else (cfg.layers.get("alibi_num_heads") or attn.heads)
            if in_kernel
            else 0,
            alibi_in_kernel=in_kernel,
            rel_pos="" if rel is None or alibi else type(rel).__name__,
            shifts=tuple(int(s) for s in shift.shifts) if shift is not None else (),
            norm=type(norm).__name__ if norm is not None else "none",
            pre_norm=bool(layers.pre_norm),
            ff_in=ff_in,
            ff_act=act,
            ff_glu=glu,
            ff_biases=biases,
            flash=bool(attn.attend.flash),
        )
