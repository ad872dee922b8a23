"""ALiBi inside the attention kernel, through FlexAttention's `score_mod`.

ALiBi (Press et al. 2022, arXiv 2108.12409) adds -slope_h * |i - j| to the attention logits.
x-transformers 2.x builds that as a dense (batch x heads x n x n) float bias and passes it
to scaled_dot_product_attention as attn_mask. FlexAttention (PyTorch blog "FlexAttention:
The Flexibility of PyTorch with the Performance of FlashAttention", 2024) takes the bias as
a per-element function instead, so no bias tensor exists. Realised here per self-attention
`Attend`: the same slopes as AlibiPositionalBias (first alibi_num_heads heads, zero for the
rest), queries at key positions k_len - q_len + i (cached decoding), causal mask as a
mask_mod, same softmax scale. The model's parameters and state_dict are untouched.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from x_transformers import x_transformers as xt
from x_transformers.attend import Attend, Intermediates

from ..errors import BuildError

_compiled_flex: Any = None  # torch.compile(flex_attention), made on first CUDA call


def _flex(q: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    # Eager flex materialises the scores (fine on CPU, for correctness); on CUDA the compiled
    # kernel is what keeps memory linear in n. Fake tensors and outer compiles stay eager.
    global _compiled_flex
    if q.is_cuda and not isinstance(q, FakeTensor) and not torch.compiler.is_compiling():
        _compiled_flex = _compiled_flex or torch.compile(flex_attention)
        return _compiled_flex(q, *args, **kwargs)
    with warnings.catch_warnings():  # eager on purpose (above): torch's advice to compile is not for us
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, *args, **kwargs)


def _plain_softmax(fn: Any) -> bool:
    while hasattr(fn, "func"):  # functools.partial, possibly nested
        fn = fn.func
    return fn is F.softmax


def attend_problems(attend: Attend) -> list[str]:
    """Attend features the flex path does not reproduce, one line each."""
    flags = (
        "flash_pack_seq",
        "selective",
        "cog_signed",
        "l2_distance",
        "add_zero_kv",
        "head_learned_sink",
        "softclamp_logits",
        "inverted_attention",
    )
    out = [f"attention option '{f}'" for f in flags if getattr(attend, f, False)]
    heads = ("pre_softmax_talking_heads", "post_softmax_talking_heads", "pre_scale_post_talking_heads")
    out += ["talking heads" for h in heads if getattr(attend, h, None) is not None][:1]
    if getattr(attend, "cope", None) is not None:
        out.append("contextual positions (cope)")
    if attend.dropout > 0:
        out.append(f"attention dropout {attend.dropout} (FlexAttention has no dropout)")
    if not _plain_softmax(attend.attn_fn):
        out.append("a non-softmax attention function (sigmoid, hard, top-k, gumbel or custom)")
    return out


def _flex_alibi_forward(
    self: Attend,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    attn_bias: Tensor | None = None,
    prev_attn: Tensor | None = None,
    attn_delta: Tensor | None = None,
    row_mask: Tensor | None = None,
    flash_pack_seq_kwargs: dict | None = None,
    causal: bool | None = None,
) -> tuple[Tensor, Intermediates]:
    """Replaces Attend.forward on the instance: same outputs, ALiBi in score_mod."""
    extras = {"attn_bias": attn_bias, "prev_attn": prev_attn, "attn_delta": attn_delta}
    extras["flash_pack_seq_kwargs"] = flash_pack_seq_kwargs
    given = [name for name, value in extras.items() if value is not None]
    if given:
        raise ValueError(f"alibi_in_kernel: Attend got {', '.join(given)}, which it does not realise")
    b, h, q_len, _ = q.shape
    kv_h, k_len = k.shape[1], k.shape[-2]
    if k_len < q_len:
        raise ValueError(f"alibi_in_kernel: {k_len} keys for {q_len} queries (self-attention only)")
    causal = self.causal if causal is None else causal
    # x-transformers tiles grouped KV heads ('b kvh n d -> b (r kvh) n d': query head i reads
    # KV head i % kv_h); flex's enable_gqa groups i // r instead, so tile exactly as it does.
    if 1 < kv_h < h:
        k, v = (repeat(t, "b kvh n d -> b (r kvh) n d", r=h // kv_h) for t in (k, v))
    # Queries are the last q_len of k_len positions (AlibiPositionalBias.forward(i, j)).
    offset = torch.full((), k_len - q_len, dtype=torch.int64, device=q.device)
    slopes = self.alibi_slopes  # (heads,): a buffer, so it is fake when the model is

    def score_mod(score: Tensor, b_: Tensor, h_: Tensor, qi: Tensor, kj: Tensor) -> Tensor:
        return score - slopes[h_] * (qi + offset - kj).abs()

    if mask is not None and mask.ndim == 2:
        mask = mask[:, None, None, :]
    # A free view: index any (b, h, i, j) even where the mask broadcasts over heads or batch.
    keep = None if mask is None else mask.expand(b, h, q_len, k_len)

    def mask_mod(b_: Tensor, h_: Tensor, qi: Tensor, kj: Tensor) -> Tensor:
        ok = qi + offset >= kj if causal else kj >= 0
        return ok if keep is None else ok & keep[b_, h_, qi, kj]

    block_mask = None
    if causal or keep is not None:
        mb, mh = (None, None) if mask is None else mask.shape[:2]  # block mask broadcasts 1s
        block_mask = create_block_mask(mask_mod, mb, mh, q_len, k_len, device=q.device)
    # Same scale as Attend: its own scale if set, else SDPA's default dim_head ** -0.5.
    scale = self.scale if self.scale is not None else q.shape[-1] ** -0.5
    # Rows with every key masked give 0 in flex, as Attend zeroes them.
    out = _flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=kv_h < h)
    return out, Intermediates()


def _refuse_custom_positions(_module: nn.Module, args: tuple, kwargs: dict) -> None:
    # Custom positions or recurrent memories would move ALiBi's positions; the stock bias
    # then differs from the positional one computed in the kernel.
    for name in ("pos", "mems"):
        if kwargs.get(name) is not None:
            raise ValueError(f"alibi_in_kernel: '{name}' is not supported (ALiBi uses sequence positions)")


def apply_alibi_in_kernel(model: xt.TransformerWrapper) -> int:
    """Move ALiBi of every self-attention layer into FlexAttention; returns layers changed."""
    layers = model.attn_layers
    rel_pos = layers.rel_pos
    if not isinstance(rel_pos, xt.AlibiPositionalBias):
        raise BuildError("'alibi_in_kernel' needs 'alibi_pos_bias: true'")
    attns = [m for m in layers.modules() if isinstance(m, xt.Attention)]
    problems = ["cross-attention"] if layers.cross_attend else []
    if model.num_memory_tokens > 0:
        problems.append("memory tokens (num_memory_tokens)")
    for attn in attns:
        problems += ["memory key/values (attn_num_mem_kv)"] if attn.num_mem_kv > 0 else []
        problems += ["relative projection bias"] if attn.rel_proj_pos_bias is not None else []
        problems += attend_problems(attn.attend)
    if problems:
        unique = list(dict.fromkeys(problems))
        raise BuildError(f"'alibi_in_kernel' does not cover {', '.join(unique)}")
    slopes = rel_pos.slopes.flatten()  # the library's own slopes, same values and dtype
    for attn in attns:
        padded = F.pad(slopes, (0, attn.heads - slopes.numel()))  # un-ALiBi'd heads: slope 0
        attn.attend.register_buffer("alibi_slopes", padded.clone(), persistent=False)
        attn.attend.forward = types.MethodType(_flex_alibi_forward, attn.attend)
    layers.rel_pos = None  # AttentionLayers then passes no rel_pos: no dense bias is built
    layers.register_forward_pre_hook(_refuse_custom_positions, with_kwargs=True)
    return len(attns)
