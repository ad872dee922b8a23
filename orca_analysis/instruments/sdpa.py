"""scaled_dot_product_attention as x-transformers calls it: capture the call, force a backend, replay.

What x-transformers 2.x passes (x_transformers/attend.py, `Attend.flash_attn`): the one KV head
is expanded to every query head (einops.repeat, a stride-0 view; no `enable_gqa`), and ALiBi
is materialised as a dense float `attn_mask` of shape (b, h, i, j), with the causal mask folded
into it and `is_causal=False` -- which FlashAttention cannot take.
- `capture_sdpa_call`: the variant's first attention call, seen by a TorchFunctionMode as it is
  made (the exact tensors: shapes, strides, dtypes, mask), replayable;
- `backends_ran`: the backend each call of a step dispatched to, from the profiler's operator names;
- `eligibility`: force one backend with `torch.nn.attention.sdpa_kernel`; a refusal comes with
  torch's reason;
- `force_backend`: route a model's every flash `Attend` through one backend.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from x_transformers.attend import Attend

BACKENDS: dict[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
CUDA_ONLY = ("efficient", "cudnn")  # torch has CPU kernels for flash and math only
# Forward operators SDPA dispatches to (torch 2.x native_functions.yaml), by backend.
OP_BACKEND = {
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash",
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_attention_math": "math",
    "aten::_scaled_dot_product_attention_math_for_mps": "math",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
}
# Header torch warns before each backend's reasons when a forced backend is refused (sdp_utils.cpp).
_HEADERS = {
    "memory efficient": "efficient",
    "flash": "flash",
    "cudnn": "cudnn",
    "overrideable": "overrideable",
}


@dataclass
class SdpaCall:
    """One `F.scaled_dot_product_attention` call, replayable."""

    args: tuple[Any, ...]  # (q, k, v): (b, h, n, d) each
    kwargs: dict[str, Any]  # attn_mask, dropout_p, is_causal, scale as x-transformers passed them

    @property
    def q(self) -> torch.Tensor:
        return self.args[0]

    @property
    def mask(self) -> torch.Tensor | None:
        return self.kwargs.get("attn_mask")

    @property
    def causal(self) -> bool:
        return bool(self.kwargs.get("is_causal", False))

    def run(self, backend: str | None = None, args: tuple[Any, ...] | None = None) -> torch.Tensor:
        call = lambda: F.scaled_dot_product_attention(*(args or self.args), **self.kwargs)  # noqa: E731
        if backend is None:
            return call()
        with sdpa_kernel([BACKENDS[backend]]):
            return call()

    def without_bias(self) -> SdpaCall:
        """The same q, k, v with a plain causal mask: what the call costs without ALiBi."""
        return SdpaCall(self.args, {**self.kwargs, "attn_mask": None, "is_causal": True})


class _Captured(Exception):
    pass


class _CaptureFirst(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.call: SdpaCall | None = None

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.call = SdpaCall(tuple(args), dict(kwargs))
            raise _Captured  # the first layer's call is every layer's call: stop the forward here
        return func(*args, **kwargs)


def capture_sdpa_call(model: torch.nn.Module, tokens: torch.Tensor) -> SdpaCall | None:
    """The first attention call of `model(tokens)`; None when the model never calls SDPA."""
    mode = _CaptureFirst()
    try:
        with torch.no_grad(), mode:
            model(tokens)
    except _Captured:
        pass
    return mode.call


@contextmanager
def profiler_chatter_dropped() -> Iterator[None]:
    """Drop the `USDT:` lines torch's native profiler writes to file descriptor 2 at every start
    and stop (no setting silences them); anything else written there meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().splitlines(keepends=True) if not line.startswith(b"USDT:")
            ]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()


def backends_ran(model: torch.nn.Module, tokens: torch.Tensor, train: bool) -> Counter[str]:
    """Backend -> number of forward SDPA calls in one step, from the profiler's operator names."""
    model.train(train)
    with profiler_chatter_dropped(), profile(activities=[ProfilerActivity.CPU]) as prof:
        if train:
            model(tokens).float().mean().backward()
        else:
            with torch.no_grad():
                model(tokens)
    model.zero_grad(set_to_none=True)
    return Counter(OP_BACKEND[e.name] for e in prof.events() if e.name in OP_BACKEND)


def library_backends(model: torch.nn.Module) -> list[str] | None:
    """The backends x-transformers enables around its call (Attend's sdpa_kernel list)."""
    for module in model.modules():
        manager = getattr(module, "sdp_context_manager", None) if isinstance(module, Attend) else None
        if manager is not None and getattr(manager, "args", None):
            enabled = set(manager.args[0])
            return [name for name, b in BACKENDS.items() if b in enabled]
    return None


def refusal_reason(messages: list[str], backend: str, error: str) -> str:
    """One line: torch's reasons under this backend's header, else all warnings, else the error."""
    clean = [m.split(" (Triggered internally at")[0].strip() for m in messages]
    section: str | None = None
    mine: list[str] = []
    for m in clean:
        low = m.lower()
        if "kernel not used because" in low:
            section = next((b for key, b in _HEADERS.items() if low.startswith(key)), "other")
        elif section == backend:
            mine.append(m)
    reasons = mine or [m for m in clean if "kernel not used because" not in m.lower()]
    return "; ".join(dict.fromkeys(reasons)) or error


def eligibility(call: SdpaCall, backend: str, train: bool) -> tuple[bool, str]:
    """Force `backend` on the captured call (and its backward when `train`); (ok, refusal reason)."""
    args = call.args
    if train:
        args = tuple(t.detach().requires_grad_(True) for t in call.args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = call.run(backend, args)
            if train:
                out.float().sum().backward()
            return True, ""
        except RuntimeError as exc:
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else "RuntimeError"
    return False, refusal_reason([str(w.message) for w in caught], backend, error)


def force_backend(model: torch.nn.Module, backend: SDPBackend | None) -> None:
    """Route every flash Attend through one sdpa backend (None: x-transformers' own choice).

    An outer `sdpa_kernel` is not enough: x-transformers enters its own around each call.
    """
    for module in model.modules():
        if isinstance(module, Attend) and module.flash:
            if not hasattr(module, "_orca_default_sdp"):
                module._orca_default_sdp = module.sdp_context_manager
            module.sdp_context_manager = (
                module._orca_default_sdp if backend is None else partial(sdpa_kernel, [backend])
            )


def fresh_like(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random values with `t`'s exact shape and strides (stride-0 expansions stay views)."""
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
    flat = torch.randn(span, generator=g, dtype=torch.float32).to(device=t.device, dtype=t.dtype)
    return flat.as_strided(t.shape, t.stride())
