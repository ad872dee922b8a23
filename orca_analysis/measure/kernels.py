"""Kernel truth: which scaled-dot-product-attention backend runs for the variant, and which could.

Ran: the variant's own forward (training: forward + backward; inference: forward under
no_grad) under torch.profiler; the backend is read from the aten operator names it dispatched to.
Could: the variant's first attention call is captured as it is made (a TorchFunctionMode sees
the exact tensors x-transformers passes: shapes, strides, dtypes, mask) and replayed with each
backend forced by `torch.nn.attention.sdpa_kernel`; a refusal is recorded with torch's reason.

What x-transformers 2.x passes (x_transformers/attend.py, `Attend.flash_attn`): the one KV head
is expanded to every query head (einops.repeat, a stride-0 view; no `enable_gqa`), and ALiBi
is materialised as a dense float `attn_mask` of shape (b, h, i, j), with the causal mask folded
into it and `is_causal=False` -- which FlashAttention cannot take. The records show both.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile
from x_transformers.attend import Attend

from ..build import build_model
from ..results import Record
from ..study.schema import Study, Variant
from ._timing import (
    base_record,
    cpu_threads,
    derive,
    measure_device,
    scale_records,
    scaled_seq_lens,
    speed_dtype,
    torch_threads,
)
from .registry import register_measurement

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


def _tokens(cfg_num_tokens: int, batch: int, seq_len: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, cfg_num_tokens, (batch, seq_len), generator=g).to(device)


@register_measurement(
    "kernels", "which SDPA backend runs for the variant's attention, and which are eligible"
)
def measure_kernels(variant: Variant, study: Study) -> list[Record]:
    device = measure_device()
    with torch_threads(cpu_threads(device)):
        return _kernels(variant, study, device)


def _kernels(variant: Variant, study: Study, device: str) -> list[Record]:
    dtype = speed_dtype(study.workloads.dtype, device)
    lengths = scaled_seq_lens(study.workloads.seq_lens, variant.config.max_seq_len, device, "kernels")
    model = build_model(variant.config, device, dtype)
    base = base_record(study, variant, "kernels", dtype, device)
    records: list[Record] = []
    enabled = library_backends(model)
    off = {} if enabled else {"status": "skipped", "error": "attn_flash is off: no sdpa_kernel list"}
    for name in BACKENDS:
        value = float(name in enabled) if enabled else None
        records.append(
            derive(
                base, "enabled_by_library", "x_transformers_sdp_kwargs", value, "flag", category=name, **off
            )
        )
    for seq_len, requested in lengths.items():
        for batch in study.workloads.batch_sizes:
            at = replace(base, seq_len=seq_len, batch=batch)
            records += scale_records(at, requested, variant.config.max_seq_len)
            records += _kernels_at(
                model, variant, at, _tokens(variant.config.num_tokens, batch, seq_len, device)
            )
    return records


def _kernels_at(model: torch.nn.Module, variant: Variant, at: Record, tokens: torch.Tensor) -> list[Record]:
    records = []
    for train in (True, False):
        metric = "ran_train" if train else "ran_inference"
        counts = backends_ran(model, tokens, train)
        records += [derive(at, metric, "profiler", calls, "calls", category=b) for b, calls in counts.items()]
        if not counts:
            why = "no scaled_dot_product_attention call: x-transformers' einsum attention"
            records.append(derive(at, metric, "profiler", 0, "calls", category="none", error=why))
    call = capture_sdpa_call(model.eval(), tokens)
    if call is None:
        return records
    mask, kv_heads = call.mask, call.args[1].shape[1]
    kind = "none" if mask is None else f"{str(mask.dtype).removeprefix('torch.')} {tuple(mask.shape)}"
    records += [
        derive(at, "sdpa_is_causal", "captured_call", float(call.causal), "flag"),
        derive(
            at,
            "sdpa_attn_mask_bytes",
            "captured_call",
            0 if mask is None else mask.untyped_storage().nbytes(),
            "bytes",
            category=kind,
        ),
        derive(
            at,
            "sdpa_kv_heads_seen",
            "captured_call",
            kv_heads,
            "heads",
            category=f"config kv_heads={variant.config.kv_heads}",
        ),
    ]
    for name in BACKENDS:
        for train in (False, True):
            ok, reason = eligibility(call, name, train)
            status = "ok" if ok else "error"
            if not ok and name in CUDA_ONLY and at.device == "cpu":
                status, reason = "skipped", f"not applicable on cpu: CUDA-only kernel ({reason})"
            metric = "eligible_train" if train else "eligible_inference"
            records.append(
                derive(
                    at,
                    metric,
                    "forced_sdpa_kernel",
                    float(ok),
                    "flag",
                    category=name,
                    status=status,
                    error=reason,
                )
            )
    return records
