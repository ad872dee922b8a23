"""Closed-form FLOPs of an x-transformers decoder, per component, forward and training step.

Convention: a multiply-add is 2 FLOPs. Counted: every matrix product, plus the element-wise
work the ALiBi bias adds (one FLOP per element written). Not counted, by any method here:
norms, activations, softmax, rotary/xPos, residual scaling, the loss and the optimizer.

Notation: b batch, n sequence length, T = b*n tokens, d dim, L depth, h heads, h_kv kv heads,
d_h head dim, d_v value head dim, f feed-forward width, V logits width, a ALiBi heads.
`dense` counts every (query, key) pair: what attention kernels compute when they do not skip
masked blocks, and what runs when ALiBi passes its bias as a dense mask. `causal` counts the
n(n+1)/2 pairs a causal decoder needs (Dao 2023, arXiv 2307.08691, counts causal as half).
Training step = forward + backward: matrix products 2x forward in the backward (grad input and
grad weight); the fused attention backward recomputes the scores, 2.5x forward for d_v = d_h
(Dao et al. 2022, arXiv 2205.14135; Dao 2023). Limits: self-attention only; the attention
path is SDPA when attn_flash is set, else x-transformers' own einsum path (no recompute).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..catalog.declared.flops import TRAIN_STEP_EXECUTED, TRAIN_STEP_MODEL_CAUSAL, TRAIN_STEP_MODEL_DENSE
from ..study.schema import ModelConfig
from .params import attention_params, feedforward_params, norm_params
from .registry import formulas, register_formula

FA = "Dao et al. 2022 (arXiv 2205.14135) and Dao 2023 (arXiv 2307.08691) FLOP accounting"
XT = "x-transformers 2.31 Attention/Attend/FeedForward forward code"
COMPONENTS = ("q_proj", "k_proj", "v_proj", "attention_core", "alibi", "out_proj", "feedforward", "logits")

MFU_CONVENTION = TRAIN_STEP_MODEL_DENSE
MFU_CAUSAL = TRAIN_STEP_MODEL_CAUSAL
HFU_CONVENTION = TRAIN_STEP_EXECUTED
MFU_CONVENTION_TEXT = (
    "MFU follows PaLM (Chowdhery et al. 2022, App. B): model FLOPs of forward and backward (metric "
    "train_step_model_dense), matrix products at 2 FLOPs per multiply-add with a 2x backward, attention "
    "over every (query, key) pair, and no rematerialisation: the FlashAttention backward's recompute of "
    "Q K^T is left out. Beside it, the causal-aware MFU (train_step_model_causal) counts only the "
    "n(n+1)/2 pairs a causal decoder needs, so it is never above PaLM's figure. HFU divides what the "
    "kernels execute (train_step_executed): every pair where a dense attention bias is passed to SDPA "
    "or no kernel skips masked blocks, the causal pairs where the kernel is told is_causal, and the "
    "recompute included. The dense and causal counts (train_step_dense, train_step_causal) keep the "
    "FlashAttention papers' convention: recompute included, 2.5x attention backward."
)
# the count kinds of instruments/flop_counter.py KINDS: (causal pairs, recompute included)
_KIND = {
    "dense": (False, True),
    "causal": (True, True),
    "model_dense": (False, False),
    "model_causal": (True, False),
}


@dataclass(frozen=True)
class PassFlops:
    forward: int
    backward: int

    @property
    def train_step(self) -> int:
        return self.forward + self.backward


@dataclass(frozen=True)
class Shape:
    """One workload on one variant: everything the formulas read."""

    cfg: ModelConfig
    seq_len: int
    batch: int
    causal: bool  # count the causal pairs instead of the dense square
    recompute: bool = True  # the fused backward's recompute of S = Q K^T (+ bias); False: model FLOPs

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len

    @property
    def pairs(self) -> int:
        n = self.seq_len
        return n * (n + 1) // 2 if self.causal else n * n  # (query, key) pairs per head


def _linear(tokens: int, d_in: int, d_out: int, layers: int = 1) -> PassFlops:
    fwd = 2 * tokens * d_in * d_out * layers  # (T, d_in) @ (d_in, d_out)
    return PassFlops(fwd, 2 * fwd)  # grad input (T, d_out)@(d_out, d_in) + grad weight (d_in, T)@(T, d_out)


def value_dim_head(cfg: ModelConfig) -> int:
    return cfg.layers.get("attn_value_dim_head") or cfg.dim_head


def fused_attention(cfg: ModelConfig) -> bool:
    """SDPA (a fused kernel that recomputes scores in its backward) or x-transformers' einsum path."""
    return bool(cfg.layers.get("attn_flash"))


def alibi_heads(cfg: ModelConfig) -> int:
    if not cfg.layers.get("alibi_pos_bias"):
        return 0
    return cfg.layers.get("alibi_num_heads") or cfg.heads


@register_formula("flops.q_proj", "Kaplan et al. 2020 (arXiv 2001.08361) Table 1; " + XT)
def q_proj_flops(s: Shape) -> PassFlops:
    c = s.cfg
    return _linear(s.tokens, c.dim, c.heads * c.dim_head, c.depth)  # W_q: (d, h*d_h)


@register_formula("flops.k_proj", "Shazeer 2019 (arXiv 1911.02150); Ainslie et al. 2023 (arXiv 2305.13245)")
def k_proj_flops(s: Shape) -> PassFlops:
    c = s.cfg
    return _linear(s.tokens, c.dim, c.kv_heads * c.dim_head, c.depth)  # W_k: (d, h_kv*d_h)


@register_formula("flops.v_proj", "Shazeer 2019 (arXiv 1911.02150); Ainslie et al. 2023 (arXiv 2305.13245)")
def v_proj_flops(s: Shape) -> PassFlops:
    c = s.cfg
    return _linear(s.tokens, c.dim, c.kv_heads * value_dim_head(c), c.depth)  # W_v: (d, h_kv*d_v)


@register_formula("flops.attention_core", FA + "; torch.utils.flop_counter sdpa_flop_count")
def attention_core_flops(s: Shape) -> PassFlops:
    c = s.cfg
    dh, dv = c.dim_head, value_dim_head(c)
    heads_pairs = s.batch * c.heads * s.pairs * c.depth  # K/V are broadcast to all h query heads
    fwd = 2 * heads_pairs * dh + 2 * heads_pairs * dv  # S = Q K^T (n, d_h)@(d_h, n); O = P V (n, n)@(n, d_v)
    bwd = 2 * fwd  # dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q
    if fused_attention(c) and s.recompute:
        bwd += 2 * heads_pairs * dh  # fused kernels recompute S = Q K^T from the saved log-sum-exp
    return PassFlops(fwd, bwd)


@register_formula(
    "flops.alibi", "Press et al. 2022 (arXiv 2108.12409); x-transformers AlibiPositionalBias, Attend"
)
def alibi_flops(s: Shape) -> PassFlops:
    """Element-wise work of the dense ALiBi bias, one FLOP per element written.

    The bias -|j - i| * slope is sub, abs, neg over (n, n), then times the slopes over (a, n, n):
    in every layer when rotary positions are on (x-transformers then calls forward_custom_pos,
    uncached), else once (the module caches it; counted for a fresh model's first step). Under SDPA, Attend then writes the causal mask into the
    (b, h, n, n) bias with masked_fill, and the kernel adds it to every score it computes, in
    the forward and again in the backward's recompute. The einsum path adds it once instead.
    """
    c, n, a = s.cfg, s.seq_len, alibi_heads(s.cfg)
    if not a:
        return PassFlops(0, 0)
    rotary = c.layers.get("rotary_pos_emb") or c.layers.get("rotary_xpos")
    builds = c.depth if rotary else 1  # without positions passed, the bias is cached after its first build
    build = builds * (3 * n * n + a * n * n)  # sub, abs, neg: (n, n); * slopes: (a, n, n)
    score_add = c.depth * s.batch * c.heads * s.pairs  # bias + S over the computed pairs
    if fused_attention(c):
        fill = c.depth * s.batch * c.heads * n * n  # masked_fill of the expanded (b, h, n, n) bias: dense
        return PassFlops(build + fill + score_add, score_add if s.recompute else 0)  # backward: recompute
    return PassFlops(build + score_add, 0)


@register_formula("flops.out_proj", "Vaswani et al. 2017 (arXiv 1706.03762) sec. 3.2.2; " + XT)
def out_proj_flops(s: Shape) -> PassFlops:
    c = s.cfg
    return _linear(s.tokens, c.heads * value_dim_head(c), c.dim, c.depth)  # W_o: (h*d_v, d)


@register_formula("flops.feedforward", "Vaswani et al. 2017 sec. 3.3; Shazeer 2020 (arXiv 2002.05202) GLU")
def feedforward_flops(s: Shape) -> PassFlops:
    c = s.cfg
    f = int(c.dim * c.layers.get("ff_mult", 4))
    up = 2 * f if c.layers.get("ff_glu") else f  # GLU projects to value and gate
    a, b = _linear(s.tokens, c.dim, up, c.depth), _linear(s.tokens, f, c.dim, c.depth)
    return PassFlops(a.forward + b.forward, a.backward + b.backward)


@register_formula("flops.logits", "Kaplan et al. 2020 Table 1 (de-embed); " + XT)
def logits_flops(s: Shape) -> PassFlops:
    c = s.cfg
    return _linear(s.tokens, c.dim, c.wrapper.get("logits_dim") or c.num_tokens)  # W_out: (d, V)


def kernel_skips_masked(cfg: ModelConfig) -> bool:
    """SDPA is told is_causal (and skips the masked blocks) only when no bias is passed: x-transformers'
    Attend.flash_attn folds the causal mask into ALiBi's dense bias."""
    return fused_attention(cfg) and not alibi_heads(cfg)


def closed_form_flops(
    cfg: ModelConfig, seq_len: int, batch: int, causal: bool, recompute: bool = True
) -> dict[str, PassFlops]:
    """Per component, in COMPONENTS order, plus `total`."""
    s = Shape(cfg, seq_len, batch, causal, recompute)
    parts = {name: formulas("flops")[name](s) for name in COMPONENTS}
    total = PassFlops(sum(p.forward for p in parts.values()), sum(p.backward for p in parts.values()))
    return {**parts, "total": total}


def closed_form_kind(cfg: ModelConfig, seq_len: int, batch: int, kind: str) -> dict[str, PassFlops]:
    """The closed form of a count kind (instruments/flop_counter.py KINDS): dense, causal, model_dense,
    model_causal, or executed (the pairs the kernel computes, recompute included)."""
    causal, recompute = _KIND.get(kind, (kernel_skips_masked(cfg), True))
    if kind not in _KIND and kind != "executed":
        raise KeyError(f"unknown FLOP count kind '{kind}'")
    return closed_form_flops(cfg, seq_len, batch, causal, recompute)


def kaplan_n(cfg: ModelConfig) -> int:
    """Kaplan's N: non-embedding parameters (attention, feed-forward, norms; no embedding or logits)."""
    return attention_params(cfg) + feedforward_params(cfg) + norm_params(cfg)


@register_formula("flops.kaplan_6n", "Kaplan et al. 2020 (arXiv 2001.08361) sec. 2.1: C = 6N per token")
def kaplan_6n(cfg: ModelConfig, seq_len: int, batch: int) -> PassFlops:
    fwd = 2 * kaplan_n(cfg) * batch * seq_len  # 2N per token forward, no context term
    return PassFlops(fwd, 2 * fwd)


def palm_n(cfg: ModelConfig) -> int:
    """N of PaLM's estimate: every parameter that takes part in a matrix product (incl. the logits matrix)."""
    return kaplan_n(cfg) + cfg.dim * (cfg.wrapper.get("logits_dim") or cfg.num_tokens)


@register_formula("flops.palm", "Chowdhery et al. 2022 (arXiv 2204.02311) App. B: 6N + 12LHQT per token")
def palm(cfg: ModelConfig, seq_len: int, batch: int) -> PassFlops:
    tokens = batch * seq_len
    attn = 4 * cfg.depth * cfg.heads * cfg.dim_head * seq_len  # 4LHQT forward: dense, no recompute
    fwd = (2 * palm_n(cfg) + attn) * tokens
    return PassFlops(fwd, 2 * fwd)  # 6N + 12LHQT per token in all


@register_formula(
    "flops.kaplan_per_token", "Kaplan et al. 2020 (arXiv 2001.08361) Table 1: 6N + 6 L n_ctx d_attn per token"
)
def kaplan_train_flops_per_token(non_embedding_params: int, depth: int, seq_len: int, d_attn: int) -> float:
    """6N + 6 L T d_attn: Kaplan et al. 2020 Table 1, training = 3x forward.

    N: every parameter but the token embedding (the output projection is a matmul and counts);
    L T d_attn: attention scores and weighted values over the full context T (causal masking
    halves the useful work; Kaplan's estimate, like most, counts it all).
    """
    return 6.0 * non_embedding_params + 6.0 * depth * seq_len * d_attn


@register_formula("flops.sdpa_useful", FA + ": the FlashAttention-2 benchmark convention")
def sdpa_useful_flops(q_shape: tuple[int, ...], n_k: int, causal: bool) -> float:
    """4*b*h*n_q*n_k*d (Q K^T and P V at 2 FLOPs per multiply-add), halved when causal."""
    b, h, n_q, d = q_shape  # (b, h, n_q, d)
    return 4 * b * h * n_q * n_k * d / (2 if causal else 1)
