"""GPU memory per device: the simulated peaks of a variant's steps (instruments/gpu_memory.py), whether they fit,
the headroom, and the largest batch that fits at a length. Forecasts, each with its method.

The largest batch: a step's peak is affine in the batch (weights, gradients and optimizer state do not grow
with it; activations, temporaries, inputs and the KV cache grow in proportion). Two walks, at batch 1 and 2,
give the intercept and the slope; the answer is the largest b with intercept + slope * b within the device's
memory. It is then checked by walks at b and b + 1: b must fit and b + 1 must not. Where the check fails
(the peak is not exactly affine: small tensors rounded to 512 B, a peak that moves to another moment), walks
refit the line through the two walks nearest the limit and check again (`SECANTS` times at most), then
bisect; the method says which. Where the peak is the same at batch 1 and 2 (a phase that does not grow with
the batch holds it: the optimizer step, whose foreach temporaries are parameter-sized), the batch is doubled
until the peak grows, and the line is drawn through the last two walks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..devices import Device
from ..study.schema import ModelConfig
from .gpu_memory import LEFT_OUT, POLICIES, GpuRun
from .memtrack import Tracked, run_steps
from .roofline import OpCost, floor_s, gpu_peaks, mfu_ceiling, model_flops, predicted_s

STEPS = ("train", "prefill", "decode")
TIME_METHOD = (
    "from the operators of the same walk (instruments/roofline.py): floor = sum of max(FLOPs / the "
    "dtype's dense peak, bytes / bandwidth), datasheet figures; predicted = the same at stated "
    "efficiencies (GEMM 0.70 assumed, flash 0.50 from FlashAttention-2, memory-efficient 0.35 assumed, "
    "bandwidth 0.80 assumed) plus 5 us per operator (assumed)"
)
SECANTS = 3
MAX_DOUBLED = 2**20  # the largest batch walked where the peak is flat at batch 1 and 2
BATCH_STEPS = ("train", "prefill")  # the steps whose largest batch is asked for (decode's follows prefill's)
METHOD = (
    "simulated: the no-allocation build walked as CUDA would run it (attention routed to the predicted "
    "backend's operator, CUDA's autocast rules, allocations rounded to 512 B); not included: " + LEFT_OUT
)


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


@dataclass(frozen=True)
class StepTime:
    """One step's time on a GPU from its operators (instruments/roofline.py): predictions."""

    step: str
    floor_s: float  # the roofline floor: no faster
    predicted_s: float  # each class at its stated efficiency, plus the per-operator overhead
    model_flops: int  # PaLM's model FLOPs of the step
    mfu_ceiling: float  # model FLOPs (PaLM) / (floor x the policy's dense peak)
    mfu_ceiling_kernel: float  # the same over the pairs the attention kernel runs (never above 1)
    operators: int


@dataclass(frozen=True)
class Walk:
    """One walk of a variant's steps as CUDA would run them: memory, the routed kernels, every operator."""

    memory: dict[str, StepMemory]
    routed: Counter[str]
    costs: dict[str, list[OpCost]]

    def times(self, device: Device, policy: str) -> dict[str, StepTime]:
        peaks = gpu_peaks(device)
        return {
            step: StepTime(
                step,
                floor_s(ops, peaks),
                predicted_s(ops, peaks),
                model_flops(step, ops),
                mfu_ceiling(step, ops, peaks, policy),
                mfu_ceiling(step, ops, peaks, policy, "kernel"),
                len(ops),
            )
            for step, ops in self.costs.items()
            if ops and isinstance(self.memory.get(step), StepMemory) and self.memory[step].peak is not None
        }


def walk(
    cfg: ModelConfig, device: Device, policy: str, seq_len: int, batch: int, steps: tuple[str, ...] = STEPS
) -> Walk:
    """Each step's simulated peak on `device` in `policy`, the SDPA backend each routed call took, and each
    step's operators with their FLOPs and bytes: one walk."""
    gpu, costs = GpuRun(device, policy), {}
    got = run_steps(cfg, gpu.build_dtype, {(seq_len, batch): steps}, gpu=gpu, costs=costs)[(seq_len, batch)]
    return Walk({s: _memory(s, got.get(s)) for s in steps}, gpu.backends, costs.get((seq_len, batch), {}))


def simulate(
    cfg: ModelConfig, device: Device, policy: str, seq_len: int, batch: int, steps: tuple[str, ...] = STEPS
) -> tuple[dict[str, StepMemory], Counter[str]]:
    """Each step's simulated peak on `device` in `policy`, and the SDPA backend each routed call took."""
    w = walk(cfg, device, policy, seq_len, batch, steps)
    return w.memory, w.routed


def peaks_at(
    cfg: ModelConfig, device: Device, policy: str, seq_len: int, batches: tuple[int, ...], step: str
) -> dict[int, int | None]:
    """The step's peak at each batch: one build, one walk per batch."""
    return peaks_of(cfg, device, policy, seq_len, batches, (step,))[step]


def peaks_of(
    cfg: ModelConfig,
    device: Device,
    policy: str,
    seq_len: int,
    batches: tuple[int, ...],
    steps: tuple[str, ...],
) -> dict[str, dict[int, int | None]]:
    """Each step's peak at each batch: one build, one walk per batch (a prefill needs no training step)."""
    gpu = GpuRun(device, policy)
    got = run_steps(cfg, gpu.build_dtype, {(seq_len, b): steps for b in batches}, gpu=gpu)
    return {s: {b: _memory(s, got[(seq_len, b)].get(s)).peak for b in batches} for s in steps}


def max_batches(
    cfg: ModelConfig,
    device: Device,
    policy: str,
    seq_len: int,
    at_1: Walk | None = None,
    steps: tuple[str, ...] = BATCH_STEPS,
) -> dict[str, MaxBatch]:
    """`max_batch` of each step, the walks at batch 1 and 2 shared by the steps (batch 1 from `at_1`, a walk at
    batch 1 the caller made, where given)."""
    batches = (2,) if at_1 is not None else (1, 2)
    peaks = peaks_of(cfg, device, policy, seq_len, batches, steps)
    if at_1 is not None:
        for s in steps:
            peaks[s][1] = at_1.memory[s].peak if s in at_1.memory else None
    return {s: max_batch(cfg, device, policy, seq_len, s, (peaks[s][1], peaks[s][2])) for s in steps}


def max_batch(
    cfg: ModelConfig,
    device: Device,
    policy: str,
    seq_len: int,
    step: str = "train",
    at_1_and_2: tuple[int, int] | None = None,
) -> MaxBatch:
    """The largest batch whose `step` fits `device` at `seq_len` (module docstring); `at_1_and_2`: the peaks at
    batch 1 and 2 where a caller has them."""
    if policy not in POLICIES:
        raise ValueError(f"unknown dtype policy {policy!r}")
    p1, p2 = at_1_and_2 or tuple(peaks_at(cfg, device, policy, seq_len, (1, 2), step).values())
    cap = device.memory_bytes
    if p1 is None or p2 is None:
        return MaxBatch(step, seq_len, 0, 0, 0, None, "the step could not be walked")
    slope, intercept = p2 - p1, 2 * p1 - p2
    if p1 > cap:
        return MaxBatch(step, seq_len, 0, intercept, slope, p1, f"batch 1 needs {p1:,} B > {cap:,} B")
    at: dict[int, int | None] = {1: p1, 2: p2}
    start = "affine from the walks at batch 1 and 2"
    if slope <= 0:  # a phase that does not grow with the batch (the optimizer step) holds the peak: double
        b = 2
        while at[b] is not None and at[b] <= p1 and b < MAX_DOUBLED:
            b *= 2
            at |= peaks_at(cfg, device, policy, seq_len, (b,), step)
        if at[b] is None or at[b] <= p1:
            why = "could not be walked" if at[b] is None else "does not grow"
            return MaxBatch(
                step,
                seq_len,
                0 if at[b] is None else b,
                intercept,
                0,
                at[b],
                f"the peak {why} at batch {b} (doubled from 2; it is flat at batch 1 and 2)",
            )
        slope = max(1, (at[b] - at[b // 2]) // (b - b // 2))
        intercept, start = (
            at[b] - slope * b,
            (
                f"flat at batch 1 and 2 (a phase that does not grow with the batch "
                f"holds the peak), doubled to {b}; affine from the walks at "
                f"{b // 2} and {b}"
            ),
        )
    affine = b = max(1, (cap - intercept) // slope)
    fits = lambda b: at[b] is not None and at[b] <= cap  # noqa: E731
    for attempt in range(SECANTS + 1):
        at |= peaks_at(cfg, device, policy, seq_len, (b, b + 1), step)
        if fits(b) and not fits(b + 1):
            how = f"{start}, checked by walks at {b} (fits) and {b + 1} (does not)"
            if attempt:
                how = (
                    f"{start} ({affine}), refitted through the walks nearest the limit ({attempt}x), checked "
                    f"by walks at {b} (fits) and {b + 1} (does not)"
                )
            return MaxBatch(step, seq_len, b, intercept, slope, at[b], how)
        (b1, q1), (b2, q2) = sorted(
            ((k, v) for k, v in at.items() if v is not None), key=lambda kv: abs(kv[1] - cap)
        )[:2]
        if q1 == q2:
            break
        b = max(1, int(b1 + (cap - q1) * (b2 - b1) / (q2 - q1)))  # the secant through the two nearest walks
    lo = max((k for k in at if fits(k)), default=0)  # bisect: lo fits (or is 0), hi does not
    hi = min(k for k in at if not fits(k))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        at |= peaks_at(cfg, device, policy, seq_len, (mid,), step)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    how = (
        f"the affine answer ({affine}; {start}) and {SECANTS} refits failed their "
        f"checks; bisected: {lo} fits, {hi} does not ({len(at)} walks; the peak is not affine here)"
    )
    return MaxBatch(step, seq_len, lo, intercept, slope, at.get(lo), how)
