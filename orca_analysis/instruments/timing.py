"""The timing harness every speed measurement uses, and the run settings they share.

`time_fn(fn, inputs, device=...)` runs `fn(input)`:
  1. `warmup` untimed calls (allocator, kernel selection and cuBLAS/oneDNN plans settle);
  2. `repeats` samples of `number` calls each, `number` chosen from the warm-up so one sample
     lasts at least `min_sample_s` (fewer samples, never under `min_repeats`, where they would
     exceed `max_time_s`); inputs rotate call by call so no sample reuses a hot cache;
  3. on CUDA: the L2 cache is flushed before each sample, outside the timed region, and the
     sample is timed with CUDA events (as triton.testing.do_bench does); elsewhere: perf_counter;
  4. statistics: median and inter-quartile range with linearly interpolated quartiles, the same
     definition and the same 10% IQR/median warning threshold as torch.utils.benchmark.Measurement.
torch.utils.benchmark.Timer itself is not used for the loop: `timeit` re-warms on every call
(two extra runs per sample, which triples the cost of second-long CPU training steps), and neither
`timeit` nor `blocked_autorange` rotates inputs, fixes the number of samples or flushes the L2.

The device, dtype and CPU settings the timed measurements share are in instruments/device.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

MAX_REL_IQR = 0.10  # torch.utils.benchmark.utils.common._IQR_WARN_THRESHOLD
L2_FLUSH_BYTES = 256 * 2**20  # larger than any current L2 (H100/H200: 50 MiB)


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one value per sample, with the statistics a report needs."""

    label: str
    times: tuple[float, ...]  # seconds per call; each sample = `number` calls / number
    number: int = 1  # calls per sample
    warmup: int = 0  # untimed calls before the first sample
    threads: int = 1  # torch intra-op threads while timing
    clock: str = "perf_counter"  # or "cuda_events"
    max_rel_iqr: float = MAX_REL_IQR
    median: float = math.nan
    q1: float = math.nan
    q3: float = math.nan

    @classmethod
    def from_values(cls, times: Sequence[float], label: str = "", **fields: Any) -> Timing:
        if len(times) == 0:
            raise ValueError("a timing needs at least one sample")
        # Linear interpolation between order statistics (numpy default == torch.quantile default).
        q1, med, q3 = (float(x) for x in np.quantile(np.asarray(times, dtype=float), [0.25, 0.5, 0.75]))
        return cls(label=label, times=tuple(float(t) for t in times), median=med, q1=q1, q3=q3, **fields)

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        return self.iqr / self.median if self.median > 0 else math.inf

    @property
    def noisy(self) -> bool:
        return self.n < 3 or self.rel_iqr > self.max_rel_iqr

    @property
    def note(self) -> str:
        """Empty when the spread is acceptable; else why the median should not be trusted."""
        if self.n < 3:
            return f"noisy: only {self.n} sample(s), spread unknown"
        if self.rel_iqr > self.max_rel_iqr:
            return (
                f"noisy: IQR is {self.rel_iqr:.0%} of the median (limit {self.max_rel_iqr:.0%}); "
                f"{self.n} samples, {self.threads} threads"
            )
        return ""


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (None: keep it); yields the count used."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _cpu_sample(fn: Callable[[T], Any], inputs: Sequence[T], start: int, number: int, device: str) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    for j in range(number):
        fn(inputs[(start + j) % len(inputs)])
    synchronize(device)
    return (time.perf_counter() - t0) / number


def _cuda_samples(
    fn: Callable[[T], Any], inputs: Sequence[T], repeats: int, number: int, device: str
) -> list[float]:
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)
    ]
    for i, (start, end) in enumerate(events):
        flush.zero_()  # evict L2; enqueued before `start`, so not timed
        start.record()
        for j in range(number):
            fn(inputs[(i * number + j) % len(inputs)])
        end.record()
    torch.cuda.synchronize(device)
    return [start.elapsed_time(end) / 1e3 / number for start, end in events]


def time_fn(
    fn: Callable[[T], Any],
    inputs: Sequence[T],
    *,
    device: str = "cpu",
    repeats: int = 5,
    min_repeats: int | None = None,
    max_time_s: float = math.inf,
    warmup: int = 1,
    min_sample_s: float = 2e-3,
    threads: int | None = None,
    label: str = "",
    max_rel_iqr: float = MAX_REL_IQR,
) -> Timing:
    """Time `fn(input)` with inputs rotated; see the module docstring for the protocol.
    `repeats` samples, cut to what fits in `max_time_s` (judged from the warm-up) but never
    below `min_repeats` (default: `repeats`)."""
    if not inputs:
        raise ValueError("time_fn needs at least one input (pass [None] for a function of nothing)")
    floor = repeats if min_repeats is None else min_repeats
    if not 1 <= floor <= repeats or warmup < 0:
        raise ValueError(
            f"need 1 <= min_repeats <= repeats and warmup >= 0, got {floor}, {repeats}, {warmup}"
        )
    with torch_threads(threads) as used:
        per_call = min_sample_s
        for i in range(warmup):
            per_call = _cpu_sample(fn, inputs, i, 1, device)  # the last warm-up call sizes the samples
        number = max(1, math.ceil(min_sample_s / max(per_call, 1e-9)))
        fits = int(max_time_s / max(per_call * number, 1e-9)) if math.isfinite(max_time_s) else repeats
        n = min(repeats, max(floor, fits))
        if torch.device(device).type == "cuda":
            times, clock = _cuda_samples(fn, inputs, n, number, device), "cuda_events"
        else:
            times = [_cpu_sample(fn, inputs, i * number, number, device) for i in range(n)]
            clock = "perf_counter"
    return Timing.from_values(
        times, label, number=number, warmup=warmup, threads=used, clock=clock, max_rel_iqr=max_rel_iqr
    )
