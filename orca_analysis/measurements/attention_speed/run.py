"""Attention microbenchmark: the variant's own attention call, timed by backend and sequence length.

At each sequence length the variant's first attention call is captured as x-transformers makes it
(instruments/sdpa.py `capture_sdpa_call`): q (b, h, n, d); k and v expanded from the KV heads to h
(stride-0 views); and, where the variant builds ALiBi, the dense float bias as `attn_mask` with
`is_causal=False`. Two cases (label `case`):
  with_bias: that call as made;
  no_bias:   the same q, k, v with `is_causal=True` and no mask -- the positional bias removed.
Every backend is forced in turn (forward only); a refused one is recorded as skipped with its
reason, an eligible one is timed (instruments/timing.py) on rotated copies of q, k, v and every
sample stored. Identical calls (same shapes, strides, dtypes, mask, causality) are timed once per
process and their timing reused: variants that differ only in dim or depth share one attention call.

FLOP convention (FlashAttention-2 benchmarks, Dao 2023, arXiv 2307.08691 Sec. 4.1): useful FLOPs
= 4*b*h*n_q*n_k*d (QK^T and PV, 2 FLOP per multiply-add), halved for causal attention
(formulas/flops.py `sdpa_useful_flops`). The with_bias call computes the full square with the
future masked in the bias; it is credited the same causal useful FLOPs, so its lower FLOP/s is the
cost of the bias path. Softmax, scale and bias add are not counted. The fastest backend's FLOP/s over
the dense GEMM ceiling (timed in the same process, `attention_gemm_ceiling`) is `sdpa_best_vs_gemm`.
"""

from __future__ import annotations

from typing import Any

import torch

from ...build import build_model
from ...catalog.declared.attention_speed import (
    ATTENTION_GEMM_CEILING,
    FLOPS_METHOD,
    SDPA_BEST_VS_GEMM,
    SDPA_FORWARD_FLOPS,
    SDPA_FORWARD_FLOPS_PER_S,
    SDPA_FORWARD_TIME,
)
from ...catalog.vocabulary import Cause, Method, Scale
from ...formulas.flops import sdpa_useful_flops
from ...instruments.device import on_measure_device, run_settings, speed_dtype
from ...instruments.sdpa import BACKENDS, CUDA_ONLY, SdpaCall, capture_sdpa_call, eligibility, fresh_like
from ...instruments.timing import Timing, time_fn
from ...results import Record
from ...study.schema import Study, Variant
from ..recorder import Recorder
from ..speed.timed import Workload, at_workload, gemm_ceiling, gemm_size, workloads

CPU_SEQ_CAP = 1024
NO_SDPA = "the variant makes no scaled_dot_product_attention call (attn_flash off)"
_CACHE: dict[tuple, tuple[bool, str, Timing | None]] = {}  # call key -> (eligible, reason, timing)


def _call_key(call: SdpaCall, backend: str) -> tuple:
    def sig(t: Any) -> Any:
        return (tuple(t.shape), t.stride(), t.dtype, t.device.type) if isinstance(t, torch.Tensor) else t

    return (backend, *(sig(a) for a in call.args), *sorted((k, sig(v)) for k, v in call.kwargs.items()))


def time_backend(call: SdpaCall, backend: str, device: str) -> tuple[bool, str, Timing | None]:
    """(eligible, refusal reason, forward timing) for `call` with `backend` forced; cached per process."""
    key = _call_key(call, backend)
    if key not in _CACHE:
        ok, reason = eligibility(call, backend, train=False)
        timing = None
        if ok:
            g = torch.Generator().manual_seed(0)
            inputs = [call.args, *(tuple(fresh_like(t, g) for t in call.args) for _ in range(2))]
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


@on_measure_device
def measure_attention_speed(variant: Variant, study: Study, device: str) -> list[Record]:
    dtype = speed_dtype(study.workloads.dtype, device)
    rec = Recorder(study.name, variant, "attention_speed", device=device, dtype=dtype, scale=Scale.MEASURED)
    gemm, n = gemm_ceiling(device, dtype)
    rec.rate(ATTENTION_GEMM_CEILING, gemm, 2 * n**3, {"size": gemm_size(n, dtype)})
    ceiling = 2 * n**3 / gemm.median
    model = build_model(variant.config, device, dtype).eval()
    g = torch.Generator().manual_seed(0)
    for w in workloads(study, variant, device, CPU_SEQ_CAP):
        at = at_workload(rec, w, CPU_SEQ_CAP)
        tokens = torch.randint(0, variant.config.num_tokens, (w.batch, w.seq_len), generator=g).to(device)
        call = capture_sdpa_call(model, tokens)
        if call is None:
            at.skipped(
                SDPA_FORWARD_TIME, Method.MEASURED, NO_SDPA, {"case": "none", "backend": "none", "repeat": 0}
            )
            continue
        cases = (
            {"with_bias": call, "no_bias": call.without_bias()}
            if call.mask is not None
            else {"no_bias": call}
        )
        for case, this in cases.items():
            _case(this, at, w, case, ceiling)
        del call, cases
    return rec.records


def _case(call: SdpaCall, rec: Recorder, w: Workload, case: str, ceiling: float) -> None:
    device = rec.defaults["device"]
    flops = sdpa_useful_flops(tuple(call.q.shape), call.args[1].shape[-2], causal=True)
    rec.add(SDPA_FORWARD_FLOPS, flops, FLOPS_METHOD, {"case": case}, scale=w.analytic_scale)
    best: tuple[Timing, str] | None = None
    for backend in BACKENDS:
        labels = {"case": case, "backend": backend}
        ok, reason, timing = time_backend(call, backend, device)
        if not ok or timing is None:
            cuda_only = backend in CUDA_ONLY and not device.startswith("cuda")
            why = f"not applicable on {device}: CUDA-only kernel" if cuda_only else f"not eligible: {reason}"
            cause = Cause.NOT_APPLICABLE if cuda_only else Cause.REFUSED
            rec.skipped(SDPA_FORWARD_TIME, Method.MEASURED, why, {**labels, "repeat": 0}, cause)
            continue
        rec.timing(SDPA_FORWARD_TIME, timing, labels)
        rec.rate(SDPA_FORWARD_FLOPS_PER_S, timing, flops, labels)
        if best is None or timing.median < best[0].median:
            best = (timing, backend)
    if best is not None:
        timing, backend = best
        rec.add(
            SDPA_BEST_VS_GEMM,
            flops / timing.median / ceiling,
            Method.DERIVED,
            {"case": case, "backend": backend},
            note=timing.note,
        )
