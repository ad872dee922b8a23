"""Time from the operator graph: every operator of a step with its FLOPs and bytes, a roofline floor, and a
predicted time. Recorded in the same walk as the memory (instruments/memtrack.py `run_steps(..., costs=)`).

Per operator (`OpCost`), from the no-allocation walk:
- FLOPs: torch's own formulas (torch.utils.flop_counter.flop_registry; the CPU flash kernel by torch's
  `sdpa_flop_count`), a multiply-add counted as 2. `dense` counts every (query, key) pair; `executed` halves
  attention where the kernel skips masked blocks (is_causal and no mask), as the FlashAttention papers
  count.
- Bytes: what the operator reads and writes. An input's bytes are its elements' bytes, capped at its
  storage's bytes: an expanded (stride-0) tensor is read once. Views move nothing and launch nothing.
- Its class: `gemm` (mm, addmm, bmm, baddbmm), `attention:<backend>` (a fused SDPA operator), or `memory`
  (everything else: element-wise, reductions, copies). The class picks the peak and the efficiency.

The floor of a step (Williams, Waterman and Patterson, "Roofline", CACM 2009): the sum over operators of
max(FLOPs / the peak for its dtype, bytes / the bandwidth). No step can run faster. The predicted time is the
same sum with each class at a stated efficiency of its peak, plus a fixed overhead per operator launched
(`Peaks`). Both are predictions: the method and the inputs are stated where they are shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import flop_counter as tfc
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..devices import Device
from .flop_counter import causal_pairs
from .timing import Timing, time_fn

aten = torch.ops.aten
GEMM = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
ATTENTION = {  # fused SDPA operator -> backend
    aten._scaled_dot_product_flash_attention: "flash",
    aten._scaled_dot_product_flash_attention_backward: "flash",
    aten._scaled_dot_product_efficient_attention: "efficient",
    aten._scaled_dot_product_efficient_attention_backward: "efficient",
    aten._scaled_dot_product_cudnn_attention: "cudnn",
    aten._scaled_dot_product_cudnn_attention_backward: "cudnn",
    aten._scaled_dot_product_flash_attention_for_cpu: "flash_cpu",
    aten._scaled_dot_product_flash_attention_for_cpu_backward: "flash_cpu",
}
# no kernel: a view under another name, or an allocation without a fill
NO_KERNEL = {
    aten._unsafe_view,
    aten.lift_fresh,
    aten.detach,
    aten.empty,
    aten.empty_strided,
    aten.new_empty,
    aten.new_empty_strided,
    aten.empty_like,
}
_META = {torch.ops.prim.device.default}


@dataclass(frozen=True)
class OpCost:
    op: str
    cls: str  # gemm | attention:<backend> | memory
    dtype: str
    flops: int  # dense (every pair)
    executed: int  # what the kernel runs (causal blocks skipped where it can)
    bytes: int
    phase: str = "forward"  # forward | backward (autograd running) | optimizer (outside both)
    out_bytes: int = 0  # of the bytes, those written to new outputs


def _bytes_in(tensors: list[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = id(t.untyped_storage())
        if key in seen:
            continue
        seen.add(key)
        total += min(t.numel() * t.element_size(), t.untyped_storage().nbytes())
    return total


def _attention_flops(func: Any, args: tuple, kwargs: dict, out: Any) -> tuple[int, int]:
    """(dense, executed) FLOPs of a fused SDPA operator on (b, h, n, d) inputs."""
    names = [a.name for a in func._schema.arguments]
    a = {**dict(zip(names, args, strict=False)), **kwargs}
    q, k, v = a["query"], a["key"], a["value"]
    backward = "backward" in func._schema.name
    if func.overloadpacket not in tfc.flop_registry:  # the CPU flash kernel has no formula in torch 2.13
        grad = a.get("grad_out")
        shapes = (q.shape, k.shape, v.shape)
        dense = (
            tfc.sdpa_backward_flop_count(grad.shape, *shapes) if backward else tfc.sdpa_flop_count(*shapes)
        )
    else:
        dense = int(tfc.flop_registry[func.overloadpacket](*args, out_val=out, **kwargs))
    skips = bool(a.get("is_causal")) and a.get("attn_bias", a.get("attn_mask")) is None
    n_q, n_k = q.shape[-2], k.shape[-2]
    return dense, dense * causal_pairs(n_q, n_k) // (n_q * n_k) if skips else dense


class CostRecorder(TorchDispatchMode):
    """Every operator dispatched inside `step(name)`, as an OpCost, filed under that step."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[str, list[OpCost]] = {}
        self._into: list[OpCost] | None = None
        self._phase = "forward"

    @contextmanager
    def optimizer(self) -> Iterator[None]:
        """Operators run in here are the optimizer's."""
        self._phase = "optimizer"
        try:
            yield
        finally:
            self._phase = "forward"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._into = self.steps.setdefault(name, [])
        try:
            with self:
                yield
        finally:
            self._into = None

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._into is None or func in _META or func.is_view or func.overloadpacket in NO_KERNEL:
            return out
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        packet = func.overloadpacket
        if packet in GEMM:
            cls, flops = "gemm", int(tfc.flop_registry[packet](*args, out_val=out, **kwargs))
            executed = flops
        elif packet in ATTENTION:
            cls = "attention:" + ATTENTION[packet]
            flops, executed = _attention_flops(func, args, kwargs, out)
        else:
            cls, flops, executed = "memory", 0, 0
        floats = [t for t in ins if t.is_floating_point()] or outs or ins
        dtype = str(floats[0].dtype).removeprefix("torch.") if floats else "none"
        if not outs and func._schema.name.endswith("_"):  # in place, returning nothing (a foreach op)
            outs = [t for t in tree_flatten(args[0])[0] if isinstance(t, torch.Tensor)]
            ins = [t for t in ins if all(t is not o for o in outs)]
        written = sum(t.numel() * t.element_size() for t in outs)
        nbytes = _bytes_in(ins) + written
        phase = "backward" if torch._C._current_graph_task_id() != -1 else self._phase
        self._into.append(OpCost(str(packet), cls, dtype, flops, executed, nbytes, phase, written))
        return out


# -- peaks, efficiencies and the two sums ---------------------------------------------------------------


@dataclass(frozen=True)
class Peaks:
    """What a device does at best, and at what fraction of it each class of operator runs (with sources)."""

    name: str
    flops: dict[str, float]  # dtype -> FLOP/s for GEMM and attention in that dtype
    bandwidth: float  # bytes/s
    overhead_s: float  # per operator launched
    efficiency: dict[str, float] = field(default_factory=dict)  # class or "attention" -> fraction of the peak
    sources: dict[str, str] = field(default_factory=dict)  # input -> where it comes from

    def eff(self, cls: str) -> float:
        return self.efficiency.get(cls, self.efficiency.get(cls.split(":")[0], 1.0))


# GPU efficiencies: fractions of the datasheet's dense peak. Replaced by a GPU run's measured figures when one
# exists; until then each is stated with its source, and "assumed" where no measurement backs it.
GPU_EFFICIENCY = {
    "gemm": (0.70, "assumed: large cuBLAS GEMMs; replace with a GPU run's gemm_ceiling / datasheet_peak"),
    "attention:flash": (0.50, "FlashAttention-2 (Dao 2023, abstract): 50-73% of A100's peak; the low end"),
    "attention:cudnn": (0.50, "assumed: as flash"),
    "attention:efficient": (0.35, "assumed: below flash (the FlashAttention-2 paper's comparisons)"),
    "memory": (0.80, "assumed: streaming kernels reach about 80% of the datasheet bandwidth"),
}
GPU_OVERHEAD_S = (5e-6, "assumed: eager PyTorch's per-operator launch cost, CPU side")
# torch's default float32 matmul is IEEE float32 (torch.backends.cuda.matmul.allow_tf32 is False): the
# float32 peak, without tensor cores, is the ceiling of float32 GEMMs.
DTYPE_PEAK = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def gpu_peaks(device: Device) -> Peaks:
    flops = {dt: device.peak_flops[key] for dt, key in DTYPE_PEAK.items() if device.peak_flops.get(key)}
    sources = {k: v[1] for k, v in GPU_EFFICIENCY.items()} | {
        "peaks": f"{device.name} datasheet: {device.source}",
        "overhead": GPU_OVERHEAD_S[1],
    }
    return Peaks(
        device.id,
        flops,
        device.bandwidth_bytes_per_s,
        GPU_OVERHEAD_S[0],
        {k: v[0] for k, v in GPU_EFFICIENCY.items()},
        sources,
    )


def _op_time(op: OpCost, peaks: Peaks, efficient: bool) -> float:
    peak = peaks.flops.get(op.dtype) or max(peaks.flops.values())
    fl, bw = (peaks.eff(op.cls), peaks.eff("memory")) if efficient else (1.0, 1.0)
    return max(op.executed / (peak * fl) if op.executed else 0.0, op.bytes / (peaks.bandwidth * bw))


def floor_s(ops: list[OpCost], peaks: Peaks) -> float:
    """The roofline floor: no step can take less."""
    return sum(_op_time(op, peaks, efficient=False) for op in ops)


def predicted_s(ops: list[OpCost], peaks: Peaks) -> float:
    """The floor with each class at its efficiency, plus the per-operator overhead."""
    return sum(_op_time(op, peaks, efficient=True) for op in ops) + peaks.overhead_s * len(ops)


CONVENTIONS = ("palm", "kernel")  # model FLOPs over every (query, key) pair (PaLM), or those the kernel runs


def model_flops(step: str, ops: list[OpCost], convention: str = "palm") -> int:
    """Model FLOPs of a step: the forward's matmul and attention FLOPs, times 3 for a training step (the backward
    is twice the forward; no recompute counted). "palm": every (query, key) pair (Chowdhery et al. 2022, App.
    B); "kernel": the pairs the attention kernel runs (is_causal without a mask skips the masked half; a mask,
    ALiBi's, makes it run them all)."""
    forward = sum(op.flops if convention == "palm" else op.executed for op in ops if op.phase == "forward")
    return 3 * forward if step == "train" else forward


def mfu_ceiling(step: str, ops: list[OpCost], peaks: Peaks, dtype: str, convention: str = "palm") -> float:
    """The best MFU the step could reach: model FLOPs over (the floor x the dtype's peak). In PaLM's convention
    it can pass 1 where a causal kernel skips the masked half that PaLM's count includes; the kernel one
    cannot."""
    return model_flops(step, ops, convention) / (floor_s(ops, peaks) * peaks.flops[dtype])


# -- this machine's CPU as a device: its peaks measured ------------------------------------------------


def bandwidth_probe(device: str = "cpu", elements: int = 16 * 2**20) -> tuple[Timing, int]:
    """A streaming copy into an existing buffer (2 x 4 x elements bytes moved), timed: (Timing, bytes)."""
    src = torch.randn(elements, device=device)
    dst = torch.empty_like(src)
    return time_fn(
        lambda pair: pair[1].copy_(pair[0]),
        [(src, dst)],
        device=device,
        label="copy",
        repeats=5,
        min_repeats=3,
        max_time_s=2.0,
        warmup=1,
    ), 2 * src.numel() * 4


OVERHEAD_CHAIN = 50  # multiply-add pairs in the overhead probe


def overhead_probe(device: str = "cpu") -> tuple[Timing, int]:
    """The per-operator cost of eager PyTorch with autograd: a chain of one-element operations, forward and
    backward, timed: (Timing, operators per call)."""
    w = torch.randn(1, device=device, requires_grad=True)

    def chain(x: torch.Tensor) -> None:
        h = x * w
        for _ in range(OVERHEAD_CHAIN):
            h = h * 1.0001 + 0.1
        h.sum().backward()

    ops = 2 + 2 * OVERHEAD_CHAIN + 1 + 2 * OVERHEAD_CHAIN + 2  # forward, sum, backward and accumulation
    x = torch.randn(1, device=device)
    return time_fn(
        chain, [x], device=device, label="overhead", repeats=5, min_repeats=3, max_time_s=2.0, warmup=1
    ), ops


def measured_peaks(name: str, gemm_flops_per_s: float, bandwidth: float, overhead_s: float) -> Peaks:
    """A device whose peaks were measured here (a GEMM ceiling, a copy's bandwidth, the per-operator cost):
    every class at efficiency 1, the measured rates being achieved ones."""
    return Peaks(
        name,
        {"float32": gemm_flops_per_s},
        bandwidth,
        overhead_s,
        {},
        {
            "peaks": "measured in this process: the speed measurement's GEMM ceiling, a streaming copy, and a chain "
            "of one-element operations with autograd"
        },
    )
