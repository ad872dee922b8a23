"""GPU memory per device: the simulated peaks of a variant's steps (instruments/gpu_memory.py), whether they fit,
the headroom, and the largest batch that fits at a length. Forecasts, each with its method.

The largest batch: a step's peak is affine in the batch (weights, gradients and optimizer state do not grow
with it; activations, temporaries, inputs and the KV cache grow in proportion). Two walks, at batch 1 and 2,
give the intercept and the slope; the answer is the largest b with intercept + slope * b within the device's
memory. It is then checked by walks at b and b + 1: b must fit and b + 1 must not. Where a check fails the
answer moves by one and is checked again (`CHECKS` times at most), and the method says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..devices import Device
from ..study.schema import ModelConfig
from .gpu_memory import LEFT_OUT, POLICIES, GpuRun
from .memtrack import Tracked, run_steps

STEPS = ("train", "prefill", "decode")
BATCH_STEPS = ("train", "prefill")  # the steps whose largest batch is asked for (decode's follows prefill's)
CHECKS = 4
METHOD = ("simulated: the no-allocation build walked as CUDA would run it (attention routed to the predicted "
          "backend's operator, CUDA's autocast rules, allocations rounded to 512 B); not included: " + LEFT_OUT)  # fmt: skip


@dataclass(frozen=True)
class StepMemory:
    """One step's simulated peak on a GPU, in bytes, or why there is none."""

    step: str
    peak: int | None
    phase: str = ""
    categories: dict[str, int] = field(default_factory=dict)
    why: str = ""

    def fits(self, device: Device) -> bool | None:
        return None if self.peak is None else self.peak <= device.memory_bytes

    def headroom(self, device: Device) -> int | None:
        return None if self.peak is None else device.memory_bytes - self.peak


@dataclass(frozen=True)
class MaxBatch:
    step: str
    seq_len: int
    batch: int  # 0: not even one sequence fits
    intercept: int  # bytes at batch 0, from the walks at batch 1 and 2
    slope: int  # bytes per sequence
    peak: int | None  # the checked walk's peak at `batch`
    method: str


def _memory(step: str, got: Tracked | str | None) -> StepMemory:
    if isinstance(got, Tracked):
        return StepMemory(step, got.total, got.phase, dict(got.categories))
    return StepMemory(step, None, why=str(got or "not walked"))


def simulate(cfg: ModelConfig, device: Device, policy: str, seq_len: int, batch: int,
             steps: tuple[str, ...] = STEPS) -> tuple[dict[str, StepMemory], Counter[str]]:  # fmt: skip
    """Each step's simulated peak on `device` in `policy`, and the SDPA backend each routed call took."""
    gpu = GpuRun(device, policy)
    got = run_steps(cfg, gpu.build_dtype, {(seq_len, batch): steps}, gpu=gpu)[(seq_len, batch)]
    return {s: _memory(s, got.get(s)) for s in steps}, gpu.backends


def _peaks(cfg: ModelConfig, device: Device, policy: str, seq_len: int, batches: tuple[int, ...],
           step: str) -> dict[int, int | None]:  # fmt: skip
    """The step's peak at each batch: one build, one walk per batch."""
    gpu = GpuRun(device, policy)
    steps = ("train",) if step == "train" else ("prefill",)
    got = run_steps(cfg, gpu.build_dtype, {(seq_len, b): steps for b in batches}, gpu=gpu)
    return {b: _memory(step, got[(seq_len, b)].get(step)).peak for b in batches}


def max_batch(cfg: ModelConfig, device: Device, policy: str, seq_len: int, step: str = "train",
              at_1_and_2: tuple[int, int] | None = None) -> MaxBatch:  # fmt: skip
    """The largest batch whose `step` fits `device` at `seq_len` (module docstring); `at_1_and_2`: the peaks at
    batch 1 and 2 where a caller has them."""
    if policy not in POLICIES:
        raise ValueError(f"unknown dtype policy {policy!r}")
    p1, p2 = at_1_and_2 or tuple(_peaks(cfg, device, policy, seq_len, (1, 2), step).values())
    cap = device.memory_bytes
    if p1 is None or p2 is None:
        return MaxBatch(step, seq_len, 0, 0, 0, None, "the step could not be walked")
    slope, intercept = p2 - p1, 2 * p1 - p2
    if p1 > cap:
        return MaxBatch(step, seq_len, 0, intercept, slope, p1, f"batch 1 needs {p1:,} B > {cap:,} B")
    if slope <= 0:
        return MaxBatch(step, seq_len, 1, intercept, slope, p1, "the peak does not grow with the batch")
    b = max(1, (cap - intercept) // slope)
    moves = []
    for _ in range(CHECKS):
        at = _peaks(cfg, device, policy, seq_len, (b, b + 1), step)
        fit, over = at[b] is not None and at[b] <= cap, at[b + 1] is None or at[b + 1] > cap
        if fit and over:
            how = f"affine from the walks at batch 1 and 2, checked by walks at {b} (fits) and {b + 1} (does not)"
            if moves:
                how += f"; the affine answer moved by {', '.join(moves)}"
            return MaxBatch(step, seq_len, b, intercept, slope, at[b], how)
        moves.append("-1" if not fit else "+1")
        b = b - 1 if not fit else b + 1
        if b < 1:
            return MaxBatch(step, seq_len, 0, intercept, slope, None, "no batch fits after the checks")
    return MaxBatch(step, seq_len, b, intercept, slope, None,
                    f"unchecked: the peak is not affine in the batch ({CHECKS} checks moved {', '.join(moves)})")  # fmt: skip
