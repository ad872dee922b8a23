"""Which scaled_dot_product_attention backend CUDA would run for a call: a prediction, from torch's own
selection rules, for a device no one here has.

Written for torch 2.13 (`RULES_FOR`), from aten/src/ATen/native/transformers/cuda/sdp_utils.cpp
(`select_sdp_backend` and the `can_use_*` functions it calls) and sdp_utils_cpp.h, checked against the
torch 2.13.0 CUDA wheel (cu130, cuDNN 9.20): every refusal text below is torch's own, and each rule names
the check it mirrors. For another torch version the answer is "unknown": the rules move between
releases (2.14 added grouped-query support to the memory-efficient kernel).

Priority (`select_sdp_backend`, `priority_order`): flash, efficient, math, cudnn; cuDNN goes first on
sm9x/sm10x when the runtime cuDNN is newer than 9.15 (`check_prefer_cudnn_attention`). A caller can
switch backends off: x-transformers wraps every call in `sdpa_kernel([FLASH, MATH, EFFICIENT])`
(attend.py), so cuDNN is never tried under it. Math always accepts: it is the fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..devices import Device

RULES_FOR = ("2.13",)  # torch major.minor these rules mirror
CUDNN_OF_THE_WHEEL = 92000  # nvidia-cudnn-cu13 9.20.0.48, pinned by the torch 2.13.0 CUDA wheel
XT_ENABLED = ("flash", "efficient", "math")  # x-transformers 2.31.10: sdpa_kernel([FLASH, MATH, EFFICIENT])
LOW_PRECISION = ("float16", "bfloat16")


@dataclass(frozen=True)
class AttentionCall:
    """What SDPA is handed in one call: shapes (b, h, n, d), dtypes and flags, as the caller makes it."""

    dtype: str  # of q, k and v: float32 | bfloat16 | float16
    batch: int
    heads_q: int
    heads_kv: int  # as passed (x-transformers expands its KV heads to every query head first)
    seq_q: int
    seq_k: int
    head_dim: int
    head_dim_v: int
    mask: str = "none"  # none | bool | float
    mask_dims: int = 0  # 2 or 4 (what cuDNN accepts), 3 otherwise
    is_causal: bool = False
    dropout: float = 0.0
    training: bool = False  # inputs require grad (a training step)
    enable_gqa: bool = False
    last_dim_stride_1: bool = True

    @property
    def label(self) -> str:
        mask = {"none": "no mask", "bool": "a boolean mask", "float": "a float (additive) mask"}[self.mask]
        causal = ", is_causal" if self.is_causal else ""
        return (
            f"{self.dtype}, (b={self.batch}, h={self.heads_q}, n={self.seq_q}, d={self.head_dim}), "
            f"{self.seq_k} keys, {mask}{causal}{', training' if self.training else ''}"
        )


@dataclass(frozen=True)
class Prediction:
    backend: str  # flash | efficient | cudnn | math | unknown
    refused: dict[str, str] = field(default_factory=dict)  # backend tried before it -> torch's reason
    order: tuple[str, ...] = ()
    method: str = ""


Check = Callable[[AttentionCall, Device], str]  # "" when the call passes
CHECKS: dict[str, list[tuple[str, Check]]] = {"flash": [], "efficient": [], "cudnn": []}


def check(backend: str, mirrors: str) -> Callable[[Check], Check]:
    """Register one of a backend's checks, in torch's order; `mirrors` names the C++ check it copies."""

    def add(fn: Check) -> Check:
        CHECKS[backend].append((mirrors, fn))
        return fn

    return add


# -- checks several backends share (registered under each, in its own order) ------------------------
def _heads(c: AttentionCall, gqa_supported: bool) -> str:
    if c.heads_q == c.heads_kv:
        return ""
    if c.enable_gqa and gqa_supported and c.heads_q % c.heads_kv == 0:
        return ""
    return (
        "For dense input, both fused kernels require query, key and value to have the same num_heads. Query."
        f"sizes(1): {c.heads_q}, Key.sizes(1): {c.heads_kv}"
    )


def _heads_gqa(c: AttentionCall, d: Device) -> str:
    return _heads(c, gqa_supported=True)


def _heads_no_gqa(c: AttentionCall, d: Device) -> str:
    return _heads(c, gqa_supported=False)


def _stride(c: AttentionCall, d: Device) -> str:
    return (
        ""
        if c.last_dim_stride_1
        else "All fused kernels require the last dimension of the input to have stride 1."
    )


# -- flash: can_use_flash_attention --------------------------------------------------------------
@check("flash", "sdp_utils_cpp.h check_for_attn_mask")
def _flash_mask(c: AttentionCall, d: Device) -> str:
    return "Flash Attention does not support non-null attn_mask." if c.mask != "none" else ""


@check("flash", "sdp_utils.cpp check_head_dim_size_flash")
def _flash_head_dim(c: AttentionCall, d: Device) -> str:
    if c.head_dim != c.head_dim_v or c.head_dim > 256:
        return (
            "Flash attention requires q,k,v to have the same last dimension and to be less than or equal to "
            f"256. Got Query.size(-1): {c.head_dim}, Value.size(-1): {c.head_dim_v}"
        )
    return ""


@check("flash", "sdp_utils.cpp check_flash_attention_hardware_support")
def _flash_hardware(c: AttentionCall, d: Device) -> str:
    if not 80 <= d.sm <= 121:
        return (
            "Flash attention only supports gpu architectures in the range [sm80, sm121]. Attempting to run on "
            f"a sm {d.compute_capability[0]}.{d.compute_capability[1]} gpu."
        )
    return ""


@check("flash", "sdp_utils.cpp check_requires_grad_and_head_dim_gt192_constraints_on_sm86_89_or_120")
def _flash_sm86_training(c: AttentionCall, d: Device) -> str:
    consumer = 86 <= d.sm <= 89 or 120 <= d.sm <= 121
    refused = 192 < c.head_dim <= 224 or (224 < c.head_dim <= 256 and c.dropout > 0)
    if c.training and consumer and refused:
        return (
            "Flash attention currently doesn't support training with head_dim ∈ (192, 224] or (head_dim ∈ "
            "(224, 256] and dropout > 0.0) on gpu architectures in the range[sm86, sm89]."
        )
    return ""


@check("flash", "sdp_utils.cpp check_flash_causal_non_square_seqlens")
def _flash_causal_square(c: AttentionCall, d: Device) -> str:
    if c.is_causal and c.seq_q != c.seq_k:
        return (
            "Flash attention does not support the is_causal flag when seqlen_q != seqlen_k. Got seqlen_q: "
            f"{c.seq_q} seqlen_k: {c.seq_k}."
        )
    return ""


@check("flash", "sdp_utils.cpp check_dtypes_low_precision")
def _flash_dtype(c: AttentionCall, d: Device) -> str:
    if c.dtype not in LOW_PRECISION:
        return f"Expected query, key and value to all be of dtype: {{Half, BFloat16}}. Got Query dtype: {c.dtype}"
    return ""


check("flash", "sdp_utils.cpp check_batch_size_and_num_heads_dense<true,true> (GQA allowed)")(_heads_gqa)
check("flash", "sdp_utils_cpp.h check_last_dim_stride_equals_1_dense")(_stride)


# -- memory-efficient: can_use_mem_efficient_attention ---------------------------------------------
@check("efficient", "sdp_utils.cpp check_mem_efficient_hardware_support")
def _efficient_hardware(c: AttentionCall, d: Device) -> str:
    if not 50 <= d.sm <= 121:
        return "Mem Efficient Attention only supports gpu architectures in the range [sm50, sm121]."
    return ""


@check("efficient", "sdp_utils.cpp check_head_dim_size_mem_efficient (minimum_gemm_alignment)")
def _efficient_head_dim(c: AttentionCall, d: Device) -> str:
    align = 8 if c.dtype in LOW_PRECISION else 4 if d.sm >= 80 else 1
    if c.head_dim % align or c.head_dim_v % align:
        return (
            f"Mem efficient attention requires last dimension of inputs to be divisible by {align}. Got "
            f"Query.size(-1): {c.head_dim}"
        )
    return ""


check("efficient", "sdp_utils.cpp check_batch_size_and_num_heads_dense<false,true> (no GQA in 2.13)")(
    _heads_no_gqa
)
check("efficient", "sdp_utils_cpp.h check_last_dim_stride_equals_1_dense")(_stride)


@check("efficient", "sdp_utils.cpp check_dtypes (sm80+: half, float, bfloat16; else half, float)")
def _efficient_dtype(c: AttentionCall, d: Device) -> str:
    allowed = ("float16", "float32", "bfloat16") if d.sm >= 80 else ("float16", "float32")
    return "" if c.dtype in allowed else f"Expected query, key and value to all be of dtype: {allowed}."


# -- cuDNN: can_use_cudnn_attention ------------------------------------------------------------------
@check("cudnn", "sdp_utils.cpp check_dtypes_low_precision")
def _cudnn_dtype(c: AttentionCall, d: Device) -> str:
    return "" if c.dtype in LOW_PRECISION else f"cuDNN attention needs float16 or bfloat16, got {c.dtype}"


@check("cudnn", "sdp_utils_cpp.h check_attn_mask_shape")
def _cudnn_mask(c: AttentionCall, d: Device) -> str:
    if c.mask != "none" and c.mask_dims not in (2, 4):
        return "Please use the following attn mask shapes: 2d - ({Q_seq_len, 1}  x {KV_seq_len, 1}); 4d - ..."
    return ""


@check("cudnn", "sdp_utils.cpp check_cudnn_hardware_support")
def _cudnn_hardware(c: AttentionCall, d: Device) -> str:
    return (
        "" if 80 <= d.sm <= 121 else "cuDNN MHA only supports gpu architectures in the range [sm80, sm121]."
    )


check("cudnn", "sdp_utils.cpp check_batch_size_and_num_heads_dense<true,false> (GQA allowed)")(_heads_gqa)


@check("cudnn", "sdp_utils.cpp check_cudnn_tensor_shapes")
def _cudnn_shapes(c: AttentionCall, d: Device) -> str:
    limit = 256 if d.sm == 90 else 128  # 256 on sm90 with cuDNN >= 9.10
    if max(c.head_dim, c.head_dim_v) > limit:
        return f"head_dim should be no more than {limit}"
    if c.head_dim % 8 or c.head_dim_v % 8:
        return "head_dim should be a multiple of 8"
    if c.seq_k == 1:
        return "cudnn SDPA does not support key/value sequence length 1."
    return ""


def order(device: Device, cudnn_version: int = CUDNN_OF_THE_WHEEL) -> tuple[str, ...]:
    """sdp_utils.cpp priority_order / check_prefer_cudnn_attention: cuDNN first on sm9x and sm10x."""
    default = ("flash", "efficient", "math", "cudnn")
    if device.compute_capability[0] in (9, 10) and cudnn_version > 91500:
        return ("cudnn", "flash", "efficient", "math")
    return default


def predict(
    call: AttentionCall,
    device: Device,
    enabled: tuple[str, ...] = XT_ENABLED,
    torch_version: str = torch.__version__,
) -> Prediction:
    """The backend `select_sdp_backend` would pick for `call` on `device`, with the backends the caller enabled,
    and why each one tried before it refused."""
    major_minor = ".".join(torch_version.split("+")[0].split(".")[:2])
    if major_minor not in RULES_FOR:
        return Prediction(
            "unknown", {}, (), f"no rules for torch {torch_version} (written for {', '.join(RULES_FOR)})"
        )
    tried = tuple(b for b in order(device) if b in enabled)
    off = [b for b in order(device) if b not in enabled]
    method = _method(torch_version) + (f"; switched off by the caller: {', '.join(off)}" if off else "")
    refused: dict[str, str] = {}
    for backend in tried:
        if backend == "math":
            return Prediction("math", refused, tried, method)
        reason = next((why for _, fn in CHECKS[backend] if (why := fn(call, device))), "")
        if not reason:
            return Prediction(backend, refused, tried, method)
        refused[backend] = reason
    return Prediction("none", refused, tried, "No available kernel. Aborting execution.")


def _method(version: str) -> str:
    return f"predicted: torch {version}'s SDPA selection rules (instruments/sdpa_rules.py), not observed"
