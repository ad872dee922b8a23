"""GPU memory, simulated: a variant's training step, prefill and decode walked on the no-allocation build as
CUDA would run them, on a device no one here has. A forecast, and it says so.

What makes the walk CUDA's and not this CPU's:
- **The attention operator.** Every `F.scaled_dot_product_attention` call goes to the operator of the backend
  predicted for it on the device (instruments/sdpa_rules.py): `_scaled_dot_product_flash_attention`
  (logsumexp (b, h, n) float32 saved, no (n, n) matrix), `_scaled_dot_product_efficient_attention` (the same,
  with the float bias), `_scaled_dot_product_cudnn_attention`, or the math composite, which materialises the
  (b, h, n, n) scores and upcasts bfloat16 to float32 on CUDA. On a CPU build torch itself would take the math
  path. The flash and efficient operators' fake (meta) kernels give their outputs' exact shapes. The
  preprocessing of torch's `_scaled_dot_product_attention` is mirrored: flash pads the head dim to a multiple
  of 8; efficient turns a boolean mask into a float bias.
- **The dtype policy** (`POLICIES`): float32 throughout; or bfloat16 autocast with CUDA's rules
  (instruments/cuda_autocast.py) over float32 weights, float32 gradients and float32 AdamW state, the
  forward and loss under autocast, the backward and the step outside it.
- **The allocator.** Every allocation is rounded up to 512 bytes, the block size of CUDA's caching allocator
  (c10/cuda/CUDACachingAllocator.cpp, kMinBlockSize and round_size). The figure is what
  `torch.cuda.max_memory_allocated` would report.

Left out, and stated wherever the figure is shown (`LEFT_OUT`):
- the CUDA context, about 0.3 to 0.6 GB per process;
- cuBLAS and cuDNN workspaces;
- the attention kernels' own scratch: flash's float32 dq accumulator in the backward;
- blocks the allocator holds but has not handed out (reserved over allocated).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..devices import Device
from .attention_forecast import call_of
from .cuda_autocast import cuda_autocast
from .sdpa_rules import XT_ENABLED, AttentionCall, Prediction, predict

ALLOCATOR_BLOCK = 512  # bytes: CUDA's caching allocator rounds every request up to a multiple of this
POLICIES = {
    "float32": "float32 weights, gradients, activations and AdamW state",
    "bfloat16": "bfloat16 autocast (CUDA's rules) over float32 weights, gradients and AdamW state",
}
LEFT_OUT = (
    "the CUDA context (about 0.3-0.6 GB), cuBLAS/cuDNN workspaces, the attention kernels' scratch "
    "(flash's float32 dq accumulator) and the allocator's reserved-but-unallocated blocks"
)
_ATEN = torch.ops.aten


class RoutedSdpa(TorchFunctionMode):
    """Each SDPA call sent to the operator of the backend predicted for it on `device` (counted in `backends`).

    Under autocast, q, k, v and a float mask are cast first, as autocast's lower-precision rule for
    scaled_dot_product_attention does before torch picks a backend."""

    def __init__(
        self, device: Device, enabled: tuple[str, ...] = XT_ENABLED, lower: torch.dtype | None = None
    ):
        super().__init__()
        self.device, self.enabled, self.lower = device, enabled, lower
        self.backends: Counter[str] = Counter()
        self.calls: Counter[AttentionCall] = Counter()  # each call as SDPA received it
        self.predicted: dict[AttentionCall, Prediction] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        return self.route(*args, **kwargs)

    def route(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        if self.lower is not None:
            q, k, v = (t.to(self.lower) if t.is_floating_point() else t for t in (q, k, v))
            if attn_mask is not None and attn_mask.is_floating_point():
                attn_mask = attn_mask.to(self.lower)
        _check_mask(attn_mask, q, k)
        training = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        kw = {
            "attn_mask": attn_mask,
            "dropout_p": dropout_p,
            "is_causal": is_causal,
            "enable_gqa": enable_gqa,
        }
        call = call_of((q, k, v), kw, training)
        if call not in self.predicted:
            self.predicted[call] = predict(call, self.device, self.enabled)
        backend = self.predicted[call].backend
        self.backends[backend] += 1
        self.calls[call] += 1
        if backend == "flash":
            return _flash(q, k, v, dropout_p, is_causal, scale)
        if backend in ("efficient", "cudnn"):
            bias = _as_bias(attn_mask, q)
            op = (
                _ATEN._scaled_dot_product_efficient_attention
                if backend == "efficient"
                else _ATEN._scaled_dot_product_cudnn_attention
            )
            return op(q, k, v, bias, training, dropout_p, is_causal, scale=scale)[0]
        if backend == "math":
            return _math(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
        raise NotImplementedError(f"no SDPA backend predicted for this call ({backend}): no routed operator")


def _check_mask(mask: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor) -> None:
    """The mask must broadcast to (b, h, n_q, n_k), as every backend requires; the fused operators' fake kernels
    do not check it, so a call CUDA would refuse is refused here, not walked."""
    if mask is None:
        return
    want = (*q.shape[:-2], q.shape[-2], k.shape[-2])
    try:
        ok = torch.broadcast_shapes(tuple(mask.shape), want) == want
    except RuntimeError:
        ok = False
    if not ok:
        raise RuntimeError(f"the attention mask of shape {tuple(mask.shape)} does not broadcast to {want}")


def _flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, causal: bool, scale: float | None
) -> torch.Tensor:
    """attention.cu: the head dim padded to a multiple of 8 (pad_last_dim), the output sliced back."""
    d = q.shape[-1]
    pad = (-d) % 8
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    scale = d**-0.5 if scale is None else scale
    out = _ATEN._scaled_dot_product_flash_attention(q, k, v, dropout, causal, False, scale=scale)[0]
    return out[..., :d] if pad else out


def _as_bias(mask: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    """sdp_utils preprocess_mask: a boolean mask becomes a float bias in q's dtype (0 kept, -inf masked); the
    last dim padded to a multiple of 16 (mem-efficient's alignment) and sliced back."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.where(mask, 0.0, float("-inf")).to(q.dtype)
    pad = (-mask.shape[-1]) % 16
    return F.pad(mask, (0, pad))[..., : mask.shape[-1]] if pad else mask


def _math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float,
    causal: bool,
    scale: float | None,
    gqa: bool,
) -> torch.Tensor:
    """The math composite as CUDA runs it: float16/bfloat16 upcast to float32 (attention.cpp,
    _scaled_dot_product_attention_math: allowFP16BF16ReductionMathSDP is off by default)."""
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):
        q, k, v = (t.float() for t in (q, k, v))
        mask = mask.float() if mask is not None and mask.is_floating_point() else mask
    out = _ATEN._scaled_dot_product_attention_math(
        q, k, v, mask, dropout, causal, None, scale=scale, enable_gqa=gqa
    )
    return out[0].to(dtype)


@dataclass
class GpuRun:
    """How `memtrack.run_steps` walks a step as CUDA would: on `device`, in `policy`."""

    device: Device
    policy: str  # a key of POLICIES
    enabled: tuple[str, ...] = XT_ENABLED
    backends: Counter[str] = field(default_factory=Counter)  # every routed call, by backend
    # each step's calls (train: its forward's), as SDPA received them, with the backend predicted for each
    calls: dict[str, Counter[AttentionCall]] = field(default_factory=dict)
    predicted: dict[AttentionCall, Prediction] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown dtype policy {self.policy!r}: choose from {', '.join(POLICIES)}")

    @property
    def build_dtype(self) -> str:
        return "float32"  # both policies keep float32 weights

    @property
    def block(self) -> int:
        return ALLOCATOR_BLOCK

    @contextmanager
    def forward(self, step: str) -> Iterator[None]:
        """Around a forward of `step` (and its loss): the policy's autocast and the routed attention."""
        lower = torch.bfloat16 if self.policy == "bfloat16" else None
        mode = RoutedSdpa(self.device, self.enabled, lower)
        with ExitStack() as stack:
            if lower is not None:
                stack.enter_context(cuda_autocast(lower))
            stack.enter_context(mode)
            try:
                yield
            finally:
                self.backends.update(mode.backends)
                self.calls.setdefault(step, Counter()).update(mode.calls)
                self.predicted.update(mode.predicted)
