"""Kernel truth: which scaled-dot-product-attention backend runs for the variant, and which could.

Ran: the variant's own forward (training: forward + backward; inference: forward under no_grad)
under torch.profiler; the backend is read from the aten operator names it dispatched to
(instruments/sdpa.py `backends_ran`). Could: the variant's first attention call is captured as it is
made (the exact tensors x-transformers passes: shapes, strides, dtypes, mask) and replayed with each
backend forced by `torch.nn.attention.sdpa_kernel`; a refused backend is an ok record of value 0 with
torch's reason in its note, a CUDA-only backend on a CPU is skipped.

What x-transformers 2.x passes: the one KV head expanded to every query head (a stride-0 view), and
ALiBi as a dense float `attn_mask` with the causal mask folded in and `is_causal=False`, which
FlashAttention cannot take. The captured-call records show both.
"""

from __future__ import annotations

import torch

from ...build import build_model
from ...catalog.declared.kernels import (
    ELIGIBLE_INFERENCE,
    ELIGIBLE_TRAIN,
    ENABLED_BY_LIBRARY,
    RAN_INFERENCE,
    RAN_TRAIN,
    SDPA_ATTN_MASK_BYTES,
    SDPA_IS_CAUSAL,
    SDPA_KV_HEADS_SEEN,
)
from ...catalog.vocabulary import Cause, Method, Scale
from ...instruments.device import on_measure_device, speed_dtype
from ...instruments.sdpa import (
    BACKENDS,
    CUDA_ONLY,
    backends_ran,
    capture_sdpa_call,
    eligibility,
    library_backends,
)
from ...results import Record
from ...study.schema import Study, Variant
from ..recorder import Recorder
from ..speed.timed import Workload, at_workload, workloads

CPU_SEQ_CAP = 32
NO_SDPA = "no scaled_dot_product_attention call: x-transformers' einsum attention"


@on_measure_device
def measure_kernels(variant: Variant, study: Study, device: str) -> list[Record]:
    dtype = speed_dtype(study.workloads.dtype, device)
    model = build_model(variant.config, device, dtype)
    rec = Recorder(study.name, variant, "kernels", device=device, dtype=dtype, scale=Scale.MEASURED)
    enabled = library_backends(model)
    for name in BACKENDS:
        if enabled:
            rec.add(
                ENABLED_BY_LIBRARY,
                float(name in enabled),
                Method.X_TRANSFORMERS_SDP_KWARGS,
                {"backend": name},
            )
        else:
            rec.skipped(
                ENABLED_BY_LIBRARY,
                Method.X_TRANSFORMERS_SDP_KWARGS,
                "attn_flash is off: no sdpa_kernel list",
                {"backend": name},
            )
    for w in workloads(study, variant, device, CPU_SEQ_CAP):
        _kernels_at(model, variant, at_workload(rec, w, CPU_SEQ_CAP), w)
    return rec.records


def _tokens(num_tokens: int, w: Workload, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, num_tokens, (w.batch, w.seq_len), generator=g).to(device)


def _kernels_at(model: torch.nn.Module, variant: Variant, rec: Recorder, w: Workload) -> None:
    device = rec.defaults["device"]
    tokens = _tokens(variant.config.num_tokens, w, device)
    for train in (True, False):
        metric = RAN_TRAIN if train else RAN_INFERENCE
        counts = backends_ran(model, tokens, train)
        for backend, calls in counts.items():
            rec.add(metric, calls, Method.PROFILER, {"backend": backend})
        if not counts:
            rec.add(metric, 0, Method.PROFILER, {"backend": "none"}, note=NO_SDPA)
    call = capture_sdpa_call(model.eval(), tokens)
    if call is None:
        return
    mask, kv_heads = call.mask, call.args[1].shape[1]
    kind = "none" if mask is None else f"{str(mask.dtype).removeprefix('torch.')} {tuple(mask.shape)}"
    rec.add(SDPA_IS_CAUSAL, float(call.causal), Method.CAPTURED_CALL)
    rec.add(
        SDPA_ATTN_MASK_BYTES,
        0 if mask is None else mask.untyped_storage().nbytes(),
        Method.CAPTURED_CALL,
        {"mask": kind},
    )
    rec.add(
        SDPA_KV_HEADS_SEEN, kv_heads, Method.CAPTURED_CALL, note=f"config kv_heads={variant.config.kv_heads}"
    )
    for name in BACKENDS:
        for train in (False, True):
            metric = ELIGIBLE_TRAIN if train else ELIGIBLE_INFERENCE
            ok, reason = eligibility(call, name, train)
            if not ok and name in CUDA_ONLY and not device.startswith("cuda"):
                rec.skipped(
                    metric,
                    Method.FORCED_SDPA_KERNEL,
                    f"not applicable on {device}: CUDA-only kernel ({reason})",
                    {"backend": name},
                    Cause.NOT_APPLICABLE,
                )
            else:
                rec.add(metric, float(ok), Method.FORCED_SDPA_KERNEL, {"backend": name}, note=reason)
