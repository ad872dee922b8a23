"""Attention microbenchmark: the variant's own attention call, timed by backend and sequence length.

At each sequence length the variant's first attention call is captured as x-transformers makes
it (kernels.capture_sdpa_call): q (b, h, n, d); k and v expanded from the KV heads to h (stride-0
views); and, where the variant builds ALiBi, the dense float bias as `attn_mask` with
`is_causal=False`. Two cases:
  with_bias: that call as made;
  no_bias:   the same q, k, v with `is_causal=True` and no mask -- the positional bias removed.
Every backend is forced in turn (forward only); a refused one is recorded as skipped with its
reason, an eligible one is timed with the harness (_timing.py) on rotated copies of q, k, v.
Identical calls (same shapes, strides, dtypes, mask, causality) are timed once per process and
their timing reused: variants that differ only in dim or depth share one attention call.

FLOP convention (FlashAttention-2 benchmarks, Dao 2023, arXiv 2307.08691 Sec. 4.1): useful FLOPs
= 4*b*h*n_q*n_k*d (QK^T and PV, 2 FLOP per multiply-add), halved for causal attention. The
with_bias call computes the full square with the future masked in the bias; it is credited the
same causal useful FLOPs, so its lower FLOP/s is the cost of the bias path. Softmax, scale and
bias add are not counted.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ..build import build_model
from ..results import Record
from ..study.schema import Study, Variant
from ._timing import (
    Timing,
    base_record,
    cpu_threads,
    derive,
    measure_device,
    rate_record,
    run_settings,
    scale_records,
    scaled_seq_lens,
    speed_dtype,
    time_fn,
    timing_records,
    torch_threads,
)
from .kernels import BACKENDS, CUDA_ONLY, SdpaCall, capture_sdpa_call, eligibility
from .registry import register_measurement
from .speed import gemm_ceiling

FLOPS_METHOD = "useful_4bhnnd_causal_half"
_CACHE: dict[tuple, tuple[bool, str, Timing | None]] = {}  # call key -> (eligible, reason, timing)


def sdpa_useful_flops(q_shape: tuple[int, ...], n_k: int, causal: bool) -> float:
    """4*b*h*n_q*n_k*d, halved when causal (FlashAttention-2 benchmark convention)."""
    b, h, n_q, d = q_shape  # (b, h, n_q, d)
    return 4 * b * h * n_q * n_k * d / (2 if causal else 1)


def _call_key(call: SdpaCall, backend: str) -> tuple:
    def sig(t: Any) -> Any:
        return (tuple(t.shape), t.stride(), t.dtype, t.device.type) if isinstance(t, torch.Tensor) else t

    return (backend, *(sig(a) for a in call.args), *sorted((k, sig(v)) for k, v in call.kwargs.items()))


def _fresh_like(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random values with `t`'s exact shape and strides (stride-0 expansions stay views)."""
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))
    flat = torch.randn(span, generator=g, dtype=torch.float32).to(device=t.device, dtype=t.dtype)
    return flat.as_strided(t.shape, t.stride())


def time_backend(call: SdpaCall, backend: str, device: str) -> tuple[bool, str, Timing | None]:
    """(eligible, refusal reason, forward timing) for `call` with `backend` forced; cached per process."""
    key = _call_key(call, backend)
    if key not in _CACHE:
        ok, reason = eligibility(call, backend, train=False)
        timing = None
        if ok:
            g = torch.Generator().manual_seed(0)
            inputs = [call.args, *(tuple(_fresh_like(t, g) for t in call.args) for _ in range(2))]
            with torch.no_grad():
                timing = time_fn(
                    lambda args: call.run(backend, args),
                    inputs,
                    device=device,
                    label=f"sdpa_{backend}",
                    **run_settings(device),
                )
        _CACHE[key] = (ok, reason, timing)
    return _CACHE[key]


@register_measurement(
    "attention_speed", "attention forward time and FLOP/s by SDPA backend and sequence length"
)
def measure_attention_speed(variant: Variant, study: Study) -> list[Record]:
    device = measure_device()
    with torch_threads(cpu_threads(device)):
        return _attention_speed(variant, study, device)


def _attention_speed(variant: Variant, study: Study, device: str) -> list[Record]:
    dtype = speed_dtype(study.workloads.dtype, device)
    lengths = scaled_seq_lens(study.workloads.seq_lens, variant.config.max_seq_len, device, "attention_speed")
    base = base_record(study, variant, "attention_speed", dtype, device)
    records: list[Record] = []
    gemm, n = gemm_ceiling(device, dtype)
    ceiling = 2 * n**3 / gemm.median
    model = build_model(variant.config, device, dtype).eval()
    g = torch.Generator().manual_seed(0)
    for seq_len, requested in lengths.items():
        for batch in study.workloads.batch_sizes:
            at = replace(base, seq_len=seq_len, batch=batch)
            records += scale_records(at, requested, variant.config.max_seq_len)
            tokens = torch.randint(0, variant.config.num_tokens, (batch, seq_len), generator=g).to(device)
            call = capture_sdpa_call(model, tokens)
            if call is None:
                why = "the variant makes no scaled_dot_product_attention call (attn_flash off)"
                records.append(
                    derive(at, "sdpa_forward_time", "measured_median", None, "s", status="skipped", error=why)
                )
                continue
            cases = (
                {"with_bias": call, "no_bias": call.without_bias()}
                if call.mask is not None
                else {"no_bias": call}
            )
            for case, this in cases.items():
                records += _case(this, replace(at, category=""), case, ceiling)
            del call, cases
    return records


def _case(call: SdpaCall, at: Record, case: str, ceiling: float) -> list[Record]:
    flops = sdpa_useful_flops(tuple(call.q.shape), call.args[1].shape[-2], causal=True)
    records = [derive(at, f"sdpa_forward_flops_{case}", FLOPS_METHOD, flops, "FLOP")]
    best: tuple[float, str] | None = None
    for backend in BACKENDS:
        by = replace(at, category=backend)
        ok, reason, timing = time_backend(call, backend, at.device)
        if not ok or timing is None:
            cuda_only = backend in CUDA_ONLY and at.device == "cpu"
            why = "not applicable on cpu: CUDA-only kernel" if cuda_only else f"not eligible: {reason}"
            records.append(
                derive(
                    by, f"sdpa_forward_time_{case}", "measured_median", None, "s", status="skipped", error=why
                )
            )
            continue
        records += timing_records(timing, f"sdpa_forward_time_{case}", by)
        records.append(
            rate_record(timing, f"sdpa_forward_flops_per_s_{case}", flops, "FLOP/s", by, FLOPS_METHOD)
        )
        if best is None or timing.median < best[0]:
            best = (timing.median, backend)
    if best is not None:
        achieved = flops / best[0]
        records.append(
            derive(
                replace(at, category=best[1]),
                f"sdpa_best_vs_gemm_{case}",
                FLOPS_METHOD,
                achieved / ceiling,
                "fraction",
            )
        )
    return records
