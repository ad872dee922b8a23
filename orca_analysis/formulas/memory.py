"""Closed-form memory of an x-transformers 2.31 decoder: a training step and inference.

Notation: b batch, n tokens, d dim, L depth, h heads, a ALiBi heads, h_kv kv heads, d_h head dim,
i = h*d_h attention width, f feed-forward width, V vocabulary, r rotary dims, s bytes per element.

Training step = forward, backward, AdamW step in the steady state: AdamW state already allocated,
gradients set to None between steps, torch's for-loop AdamW (foreach=False). Activations start from
Korthikanti et al. 2022 (arXiv 2205.05198, eq. 1) and follow what x-transformers 2.31 really keeps
(x_transformers.py / attend.py, checked op by op against the simulated tracker):
- rotary on => the layers pass explicit positions, so ALiBi takes AlibiPositionalBias.forward_custom_pos
  in every layer: int64 distances (n, n), times slopes (a, n, n), padded to (h, n, n); Attend.flash_attn
  then masks it with a bool (n, n) causal mask into a dense float (b, h, n, n) `attn_mask`, which SDPA
  saves for backward. Without rotary the (h, n, n) bias is cached once on the module instead.
- token shift copies every sublayer input (b, n, d); xPos rotary saves cos, sin (n, r) per projection
  and the keys' inverse scale; SDPA's output is copied when heads are merged; post-LN (DeepNorm) saves
  the residual sum and the normalised tensor.
- x-transformers keeps every sublayer output (its hidden lists) and the keys before rotary (its cache)
  until the forward returns; log-softmax saves (b, n, V) and the backward starts with two more.
Limits: the flash (SDPA) path; LayerNorm, no GLU; pre-LN is counted as post-LN; the backward peak is
taken at its start (the logits' gradients), so a tiny vocabulary (peak inside the last layer) reads a few
% low. `unmodelled(cfg)` names the settings outside this, and the measurement reports the gap.
bf16_mixed counts ZeRO's bytes per parameter and every activation at 2 bytes: torch.autocast keeps
LayerNorm, the residual stream, the ALiBi bias and log-softmax in fp32, so it is a lower bound there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..study.schema import ModelConfig
from .params import _has_abs_pos_emb, closed_form_params
from .registry import register_formula

XT = "x-transformers 2.31 x_transformers.py / attend.py, as run"
KORTHIKANTI = "Korthikanti et al. 2022 (arXiv 2205.05198) eq. 1, adapted to " + XT
ZERO = "Rajbhandari et al. 2019, ZeRO (arXiv 1910.02054) sec. 3.1: 16 bytes/param for mixed-precision Adam"
KV = "Pope et al. 2022 (arXiv 2211.05102) sec. 3.1 KV cache; Shazeer 2019 (arXiv 1911.02150) one KV head"


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter for each copy a training step keeps, and per activation element."""

    name: str
    weight: int  # the copy the forward reads
    master: int  # fp32 master copy (mixed precision only)
    grad: int
    adam: int  # AdamW exp_avg + exp_avg_sq
    act: int


PRECISIONS = {
    "fp32": Precision("fp32", 4, 0, 4, 8, 4),  # 4 + 4 + 8 = 16 B/param
    "bf16": Precision("bf16", 2, 0, 2, 4, 2),  # pure bf16: torch keeps AdamW state in the param dtype
    "bf16_mixed": Precision("bf16_mixed", 2, 4, 2, 8, 2),  # ZeRO: 2 + 2 + (4 + 4 + 4) = 16 B/param
}
DTYPE_PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "bf16"}


def bytes_per_element(dtype: str) -> int:
    """Bytes of one activation (or cache) element in a study dtype: 4 for float32, 2 for 16-bit."""
    return PRECISIONS[DTYPE_PRECISION[dtype]].act


@dataclass(frozen=True)
class Dims:
    """One workload on one variant, as the formulas read it."""

    b: int
    n: int
    d: int
    L: int
    h: int
    a: int  # ALiBi heads (0 without ALiBi)
    kv: int
    dh: int
    f: int
    V: int
    r: int  # rotary dims (0 without rotary)
    xpos: bool
    shift: int  # shift_tokens k: the input splits into k+1 chunks, k of them shifted (padded copies)
    params: int
    largest: int  # elements of the largest parameter tensor (the token table / logits matrix)
    s: int = 4  # bytes per activation element

    @property
    def i(self) -> int:
        return self.h * self.dh

    @property
    def kv_saved(self) -> int:
        # one or all kv heads reach SDPA as they are (expand: no copy); 1 < h_kv < h is repeated to h
        return self.kv if self.kv in (1, self.h) else self.h


def dims(cfg: ModelConfig, n: int, b: int, precision: Precision = PRECISIONS["fp32"]) -> Dims:
    layers = cfg.layers
    rotary = bool(layers.get("rotary_pos_emb") or layers.get("rotary_xpos"))
    alibi = bool(layers.get("alibi_pos_bias"))
    d, f = cfg.dim, int(cfg.dim * layers.get("ff_mult", 4))
    return Dims(
        b=b,
        n=n,
        d=d,
        L=cfg.depth,
        h=cfg.heads,
        kv=cfg.kv_heads,
        dh=cfg.dim_head,
        f=f,
        V=cfg.num_tokens,
        a=(layers.get("alibi_num_heads") or cfg.heads) if alibi else 0,
        r=(layers.get("rotary_emb_dim") or cfg.dim_head // 2) if rotary else 0,
        xpos=bool(layers.get("rotary_xpos")),
        shift=_shift(layers.get("shift_tokens", 0)),
        params=closed_form_params(cfg)["total"],
        largest=max(cfg.num_tokens * d, d * f, d * cfg.heads * cfg.dim_head),
        s=precision.act,
    )


def _shift(value: int | list[int]) -> int:
    return max(value) if isinstance(value, list) else int(value or 0)  # per-layer lists: the largest


# --- parameters, gradients, optimizer ---------------------------------------------------------


@register_formula("memory.weights", ZERO)
def weights(m: Dims, p: Precision) -> int:
    return m.params * (p.weight + p.master)  # (P,) in the compute dtype, plus the fp32 master copy


@register_formula("memory.gradients", ZERO)
def gradients(m: Dims, p: Precision) -> int:
    return m.params * p.grad


@register_formula("memory.optimizer_state", "Loshchilov & Hutter 2019 (arXiv 1711.05101) AdamW; " + ZERO)
def optimizer_state(m: Dims, p: Precision) -> int:
    return m.params * p.adam + 4 * _n_param_tensors(m)  # exp_avg, exp_avg_sq (P,) each + a step scalar


@register_formula("memory.optimizer_step_temp", "torch.optim.adamw _single_tensor_adam: sqrt, then divide")
def optimizer_step_temp(m: Dims, p: Precision) -> int:
    return 2 * m.largest * (p.master or p.weight)  # denom = exp_avg_sq.sqrt() / c: two (largest,) alive


def _n_param_tensors(m: Dims) -> int:
    # token table + logits; per layer: q, k, v, out, 2 LN gains, 2 FF weights + 2 biases
    return 2 + m.L * 10


# --- activations ------------------------------------------------------------------------------


@register_formula("memory.alibi_mask", XT + ": Attend.flash_attn masked_fill -> SDPA attn_mask, saved")
def alibi_mask(m: Dims) -> int:
    return m.b * m.h * m.n**2 * m.s if m.a else 0  # (b, h, n, n) float, per attention layer


@register_formula("memory.alibi_build", XT + ": AlibiPositionalBias.forward_custom_pos")
def alibi_build(m: Dims) -> int:
    """Transient while one layer builds its bias from positions (rotary on): int64 |j - i|, slopes, pad."""
    if not (m.a and m.r):
        return 0
    n2 = m.n**2
    return max(16 * n2, 8 * n2 + m.a * n2 * m.s, (m.a + m.h) * n2 * m.s)  # (n, n) x2, (a, n, n), (h, n, n)


@register_formula("memory.alibi_cached", XT + ": AlibiPositionalBias.forward caches its bias (no positions)")
def alibi_cached(m: Dims) -> int:
    return m.h * m.n**2 * m.s if m.a and not m.r else 0


@register_formula("memory.attention_saved", KORTHIKANTI)
def attention_saved(m: Dims) -> int:
    """Saved for backward by one attention sublayer, its ALiBi mask excluded."""
    b, n, s = m.b, m.n, m.s
    x_in = b * n * m.d  # the (shifted) input, read by to_q/to_k/to_v
    q = b * n * m.i  # q after rotary and SDPA's scale (b, h, n, d_h)
    kv = 2 * b * n * m.dh * m.kv_saved  # k after rotary, v
    out = (2 if m.r else 1) * b * n * m.i  # SDPA output; a merged-heads copy if rotary made q contiguous
    post_ln = 2 * b * n * m.d  # residual sum and the normalised tensor
    fp32 = 4 * b * m.h * n + 8 * b * n  # SDPA logsumexp (b, h, n); LN mean and rstd (b, n)
    return (x_in + q + kv + out + post_ln) * s + fp32 + _rotary_layer(m)


@register_formula("memory.feedforward_saved", KORTHIKANTI)
def feedforward_saved(m: Dims) -> int:
    b, n = m.b, m.n
    # input (b, n, d), pre-GELU and post-GELU (b, n, f), residual sum and normalised (b, n, d)
    return (3 * b * n * m.d + 2 * b * n * m.f) * m.s + 8 * b * n


@register_formula("memory.forward_held", XT + ": AttentionLayers keeps hidden lists and cached_kv")
def forward_held(m: Dims) -> int:
    """Per layer, alive until the forward returns: both sublayer outputs and the keys before rotary."""
    return (2 * m.b * m.n * m.d + m.b * m.n * m.dh * m.kv) * m.s


@register_formula("memory.logits", XT + ": TransformerWrapper.to_logits; log_softmax saves its output")
def logits(m: Dims) -> int:
    return m.b * m.n * m.V * m.s  # (b, n, V)


@register_formula("memory.rotary_tables", XT + ": RotaryEmbedding.forward, once per forward")
def rotary_tables(m: Dims) -> int:
    return (2 if m.xpos else 1) * m.n * m.r * m.s  # freqs (1, n, r) and the xPos scale


@register_formula("memory.korthikanti_layer", "Korthikanti et al. 2022 (arXiv 2205.05198) eq. 1, reference")
def korthikanti_layer(m: Dims) -> int:
    # sbh(34 + 5as/h) bytes at 2 bytes/element, with dropout masks; rescaled to s bytes/element
    return m.n * m.b * m.d * (34 + 5 * m.h * m.n / m.d) * m.s // 2


@register_formula("memory.kv_cache", KV)
def kv_cache(m: Dims, tokens: int) -> int:
    return m.L * m.kv * m.dh * tokens * m.b * 2 * m.s  # k and v (b, h_kv, tokens, d_h) per layer


def kv_cache_bytes(cfg: ModelConfig, seq_len: int, batch: int = 1, dtype: str = "bfloat16") -> int:
    """The KV cache of `cfg` holding `seq_len` tokens: 2 x depth x batch x kv heads x tokens x d_h x bytes."""
    return kv_cache(dims(cfg, seq_len, batch, PRECISIONS[DTYPE_PRECISION[dtype]]), seq_len)


@register_formula("memory.cache_object", XT + ": LayerIntermediates returned with return_intermediates")
def cache_object(m: Dims, tokens: int) -> int:
    """What x-transformers keeps between decode steps: the KV cache plus 2L+1 hidden states."""
    return kv_cache(m, tokens) + (2 * m.L + 1) * m.b * tokens * m.d * m.s


# --- peaks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peak:
    total: int
    phase: str  # where the peak is
    categories: dict[str, int]  # parameters, gradients, optimizer_state, activations, temporaries, inputs
    phases: dict[str, int] = field(default_factory=dict)  # peak of each phase


def _attention_peak(m: Dims, grad: bool = True) -> int:
    """One attention sublayer at its peak: while the bias is built, in SDPA, or at to_out."""
    before, moments = _attention_moments(m, grad)
    return before + max(total for total, _ in moments.values())


def _attention_moments(m: Dims, grad: bool = True) -> tuple[int, dict[str, tuple[int, int]]]:
    """What one attention sublayer holds before its peak, and at each candidate peak moment
    (build: the ALiBi bias built from positions; sdpa; out: at to_out) its bytes and their ALiBi part."""
    b, n, s, n2 = m.b, m.n, m.s, m.n**2
    # x_in, k before rotary, q and k after rotary, v; the previous sublayer's output (the layer loop's
    # `out`, none in a 1-layer model) and the shifted chunks are still referenced
    before = (b * n * m.d + b * n * m.dh * m.kv + b * n * m.i + 2 * b * n * m.dh * m.kv_saved) * s
    before += 2 * b * n * m.dh * m.kv * s if m.kv_saved != m.kv else 0  # grouped: k, v before the repeat
    before += ((m.L > 1) * b * n * m.d + m.shift * b * n * (m.d // (m.shift + 1))) * s
    before += _rotary_layer(m) if grad else (n * m.r * s if m.xpos else 0)  # no_grad frees cos/sin at once
    bias = m.h * n2 * s if m.a and m.r else 0  # (h, n, n), referenced until the sublayer returns
    sdpa = 2 * b * n * m.i * s + 4 * b * m.h * n  # q scaled by SDPA's scale, output, logsumexp
    # the bias brings a bool causal mask (is_causal is off once a bias is given) and the masked bias
    alibi_sdpa = bias + (n2 if m.a else 0) + alibi_mask(m)
    merged = b * n * m.i * s if m.r or not grad else 0  # a copy (rotary made q contiguous) or SDPA's output
    alibi_out = bias + alibi_mask(m)
    at_out = (sdpa if grad else 0) + alibi_out + merged + b * n * m.d * s  # + to_out's output
    moments = {
        "build": (alibi_build(m),) * 2,
        "sdpa": (sdpa + alibi_sdpa, alibi_sdpa),
        "out": (at_out, alibi_out),
    }
    return before, moments


def _rotary_layer(m: Dims) -> int:
    return (5 if m.xpos else 4) * m.n * m.r * m.s  # cos, sin per projection (n, r); xPos: keys' 1/scale


def _peak(phases_act: dict[str, int], static: dict[str, int]) -> Peak:
    phases = {k: v + sum(static.values()) for k, v in phases_act.items()}
    phase = max(phases, key=phases.get)
    cats = dict(static, activations=phases_act[phase])
    return Peak(phases[phase], phase, cats, phases)


def train_peak(cfg: ModelConfig, n: int, b: int, precision: str = "fp32") -> Peak:
    p = PRECISIONS[precision]
    m = dims(cfg, n, b, p)
    layer = attention_saved(m) + alibi_mask(m) + feedforward_saved(m)
    saved = m.L * layer + m.b * m.n * m.d * m.s + rotary_tables(m)  # + the last output, read by to_logits
    x0 = 2 * m.b * m.n * m.d * m.s  # token embeddings and their sum with the (zero) positions
    static = {
        "parameters": weights(m, p),
        "optimizer_state": optimizer_state(m, p),
        "inputs": 2 * b * n * 8,
        "buffers": alibi_cached(m),
    }
    peak = _peak(
        {
            "forward_attention": (m.L - 1) * (layer + forward_held(m))
            + x0
            + _attention_peak(m)
            + rotary_tables(m),
            "forward_loss": saved + 2 * logits(m),  # logits and log-probs
            "backward_start": saved + 3 * logits(m),  # log-probs, their gradient, the logits' gradient
            "optimizer": gradients(m, p) + optimizer_step_temp(m, p),
        },
        static,
    )
    if peak.phase == "backward_start":  # the two fresh gradients are the tracker's "temporaries"
        peak.categories.update(activations=saved + logits(m), temporaries=2 * logits(m))
    if peak.phase == "optimizer":
        peak.categories.update(activations=0, gradients=gradients(m, p))
        peak.categories["optimizer_state"] += optimizer_step_temp(m, p)
    return peak


@register_formula("memory.alibi_at_peak", XT + ": the ALiBi tensors alive at train_peak's moment")
def alibi_at_peak(cfg: ModelConfig, n: int, b: int, precision: str = "fp32") -> int:
    """Bytes of ALiBi tensors alive at the closed-form training peak (train_peak's phase): the cached
    (h, n, n) bias (no rotary) always; at forward_loss / backward_start the L saved (b, h, n, n) masks;
    at forward_attention L-1 saved masks plus what the current layer holds at its peak moment (while
    it builds the bias, or the bias, the bool causal mask and the masked bias at SDPA, or the bias and
    the masked bias at to_out). The build is transient: it never coexists with a finished layer's."""
    m = dims(cfg, n, b, PRECISIONS[precision])
    phase = train_peak(cfg, n, b, precision).phase
    held = alibi_cached(m)
    if phase in ("forward_loss", "backward_start"):
        return held + m.L * alibi_mask(m)
    if phase == "forward_attention":
        _, moments = _attention_moments(m)
        _, alibi = max(moments.values(), key=lambda t: t[0])  # the first of equal peaks, as max() above
        return held + (m.L - 1) * alibi_mask(m) + alibi
    return held  # optimizer: no activation is alive


def prefill_peak(cfg: ModelConfig, n: int, b: int, precision: str = "fp32") -> Peak:
    """No-grad forward with return_intermediates=True, as AutoregressiveWrapper.generate calls it."""
    p = PRECISIONS[precision]
    m = dims(cfg, n, b, p)
    kept = 2 * m.b * m.n * m.d * m.s + 2 * m.b * m.n * m.dh * m.kv * m.s  # two outputs, k and v
    x0 = 2 * m.b * m.n * m.d * m.s + rotary_tables(m)  # token embeddings, + (zero) positions; rotary
    static = {"parameters": weights(m, p), "inputs": b * n * 8, "buffers": alibi_cached(m)}
    return _peak(
        {
            "forward_attention": x0 + (m.L - 1) * kept + _attention_peak(m, grad=False),
            "forward_logits": x0 + m.L * kept + logits(m),
        },
        static,
    )


def decode_cached_peak(cfg: ModelConfig, n: int, b: int, precision: str = "fp32") -> Peak:
    """One token on a cache of n: the cache object held, new K/V (cat copies them), all n+1 embeddings."""
    p = PRECISIONS[precision]
    m = dims(cfg, n, b, p)
    static = {"parameters": weights(m, p), "inputs": b * (n + 1) * 8 + cache_object(m, n), "buffers": 0}
    act = kv_cache(m, n + 1) + 2 * m.b * (n + 1) * m.d * m.s + m.b * m.V * m.s  # K/V, embeddings, logits
    return _peak({"decode": act}, static)


MODELLED = {
    "num_tokens",
    "max_seq_len",
    "use_abs_pos_emb",
    "tie_embedding",
    "dim",
    "depth",
    "heads",
    "alibi_pos_bias",
    "alibi_num_heads",
    "rotary_xpos",
    "rotary_pos_emb",
    "attn_flash",
    "deepnorm",
    "shift_tokens",
    "attn_one_kv_head",
    "attn_kv_heads",
    "attn_dim_head",
    "ff_mult",
    "ff_no_bias",
}


def unmodelled(cfg: ModelConfig) -> list[str]:
    """Settings of this config whose memory the closed form does not model (named in the gap records)."""
    out = [k for k in {**cfg.wrapper, **cfg.layers} if k not in MODELLED]
    if not cfg.layers.get("attn_flash"):
        out.append(
            "attn_flash=false: (b, h, n, n) scores and probabilities, kept in x-transformers' intermediates"
        )
    if _has_abs_pos_emb(cfg):
        out.append("absolute position embeddings (b, n, d)")
    return out


DEVICE_MEMORY = {"80GB": 80 * 10**9, "141GB": 141 * 10**9}  # nominal capacities (H100 80GB, H200): the
# simulated peaks are set against them (measurements/memory), never the closed form
