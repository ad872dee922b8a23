"""GPU memory per device: the simulated peaks of a variant's steps (instruments/gpu_memory.py), whether they fit,
the headroom, and the largest batch that fits at a length. Forecasts, each with its method.

The largest batch that fits: instruments/max_batch.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..devices import Device
from ..study.schema import ModelConfig
from .attention_forecast import Forecast
from .gpu_memory import LEFT_OUT, GpuRun
from .memtrack import Tracked, run_steps
from .replay import TimelineTracker
from .roofline import OpCost, floor_s, gpu_peaks, mfu_ceiling, model_flops, predicted_s
from .sdpa_rules import AttentionCall, Prediction

STEPS = ("train", "prefill", "decode")
TIME_METHOD = (
    "from the operators of the same walk (instruments/roofline.py): floor = sum of max(FLOPs / the "
    "dtype's dense peak, bytes / bandwidth), datasheet figures; predicted = the same at stated "
    "efficiencies (GEMM 0.70 assumed, flash 0.50 from FlashAttention-2, memory-efficient 0.35 assumed, "
    "bandwidth 0.80 assumed) plus 5 us per operator (assumed)"
)
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
    timeline: list | None = field(default=None, repr=False, compare=False)  # the tracker's (replay.py)

    def fits(self, device: Device) -> bool | None:
        return None if self.peak is None else self.peak <= device.memory_bytes

    def headroom(self, device: Device) -> int | None:
        return None if self.peak is None else device.memory_bytes - self.peak


def step_memory(step: str, got: Tracked | str | None) -> StepMemory:
    if isinstance(got, Tracked):
        return StepMemory(step, got.total, got.phase, dict(got.categories), timeline=got.timeline)
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
    calls: dict[str, Counter[AttentionCall]]  # each step's attention calls as SDPA received them (routed)
    predicted: dict[AttentionCall, Prediction]  # the backend predicted for each

    def attention(self, step: str = "train") -> list[Forecast]:
        """The step's distinct attention calls (train: its forward's), each with its count and prediction."""
        return [Forecast(c, n, self.predicted[c]) for c, n in self.calls.get(step, Counter()).items()]

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
    jobs = {(seq_len, batch): steps}
    got = run_steps(cfg, gpu.build_dtype, jobs, gpu=gpu, costs=costs, tracker=TimelineTracker)[
        (seq_len, batch)
    ]
    memory = {s: step_memory(s, got.get(s)) for s in steps}
    return Walk(memory, gpu.backends, costs.get((seq_len, batch), {}), gpu.calls, gpu.predicted)


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
    walked = memories_of(cfg, device, policy, {(seq_len, b): steps for b in batches})
    return {s: {b: walked[(seq_len, b)][s].peak for b in batches} for s in steps}


def memories_of(
    cfg: ModelConfig, device: Device, policy: str, jobs: dict[tuple[int, int], tuple[str, ...]]
) -> dict[tuple[int, int], dict[str, StepMemory]]:
    """Each (seq_len, batch)'s steps walked, with their timelines: one build."""
    gpu = GpuRun(device, policy)
    got = run_steps(cfg, gpu.build_dtype, jobs, gpu=gpu, tracker=TimelineTracker)
    return {wl: {s: step_memory(s, got[wl].get(s)) for s in steps} for wl, steps in jobs.items()}
