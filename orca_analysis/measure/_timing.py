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

Run settings shared by kernels, attention_speed and speed: the device (CUDA when present), the
dtype (bf16 on GPU), the CPU's thread count (1, stated in the records) and the CPU's shorter
sequence lengths (the study's, scaled so max_seq_len maps to a per-measurement cap).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch

from ..results.records import Record
from ..study.schema import Study, Variant

T = TypeVar("T")

MAX_REL_IQR = 0.10  # torch.utils.benchmark.utils.common._IQR_WARN_THRESHOLD
L2_FLUSH_BYTES = 256 * 2**20  # larger than any current L2 (H100/H200: 50 MiB)
CPU_SEQ_CAPS = {"kernels": 32, "attention_speed": 1024, "speed": 64}  # tokens at max_seq_len, on CPU
MIN_CPU_SEQ = 8


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


def measure_device() -> str:
    """CUDA when present, else CPU; ORCA_DEVICE=cpu forces the CPU on a GPU machine."""
    forced = os.environ.get("ORCA_DEVICE")
    if forced:
        return forced
    return "cuda" if torch.cuda.is_available() else "cpu"


def speed_dtype(study_dtype: str, device: str) -> str:
    """bf16 on GPU when the study keeps the float32 default (the design's flash path needs 16-bit);
    a 16-bit study dtype is kept; on CPU the study's dtype (float32 by default)."""
    if device.startswith("cuda") and study_dtype == "float32":
        return "bfloat16"
    return study_dtype


def scaled_seq_lens(
    seq_lens: Sequence[int], max_seq_len: int, device: str, measurement: str
) -> dict[int, list[int]]:
    """Measured length -> the requested lengths it stands for. GPU: unchanged. CPU: scaled by
    cap / max_seq_len (never up; at least MIN_CPU_SEQ), so the model's longest context maps to
    the cap and the ratios between lengths are kept; each requested length maps on its own, so a
    runner that calls once per workload measures no length twice."""
    out: dict[int, list[int]] = {}
    for s in sorted(set(seq_lens)):
        n = s
        if not device.startswith("cuda"):
            n = max(min(s, MIN_CPU_SEQ), round(s * min(1.0, CPU_SEQ_CAPS[measurement] / max_seq_len)))
        out.setdefault(n, []).append(s)
    return out


def scale_records(at: Record, requested: list[int], max_seq_len: int) -> list[Record]:
    """Where the CPU measured a shorter length than the study asked for: the asked-for lengths."""
    how = f"cpu: seq_len scaled by {CPU_SEQ_CAPS[at.measurement]}/{max_seq_len}"
    return [
        derive(at, "seq_len_requested", "cpu_scaled", s, "tokens", category=how)
        for s in requested
        if s != at.seq_len
    ]


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


def base_record(study: Study, variant: Variant, measurement: str, dtype: str, device: str) -> Record:
    """The fields every record of one measurement run shares; `derive` fills in the rest."""
    return Record(
        study.name,
        variant.variant_id,
        measurement,
        "",
        "",
        None,
        "",
        dtype=dtype,
        device=device,
        swept=variant.swept,
    )


def derive(base: Record, metric: str, method: str, value: float | None, unit: str, **fields: Any) -> Record:
    """A record like `base` (same variant and workload) for another value."""
    return replace(base, metric=metric, method=method, value=value, unit=unit, **fields)


def timing_records(timing: Timing, metric: str, base: Record) -> list[Record]:
    """Median and IQR as two records (unit s); the median carries the noise flag in `error`
    while staying `ok`: a noisy median is still the measured value."""
    median = replace(base, metric=metric, method="measured_median", value=timing.median, unit="s")
    median = replace(median, error=timing.note)
    iqr = replace(base, metric=metric, method="measured_iqr", value=timing.iqr, unit="s")
    return [median, iqr]


def rate_record(timing: Timing, metric: str, work: float, unit: str, base: Record, method: str) -> Record:
    """`work` per median call (tokens, FLOP) as a rate; inherits the timing's noise flag."""
    return replace(
        base, metric=metric, method=method, value=work / timing.median, unit=unit, error=timing.note
    )


def cpu_threads(device: str) -> int | None:
    """Intra-op threads for a CPU measurement: ORCA_CPU_THREADS, else 1 (None on GPU: leave torch be).
    One thread because the CPU runs share their cores: on 2 cores with other jobs running, two
    OpenMP threads wait on each other at every barrier and were 6x slower and noisier than one."""
    if device.startswith("cuda"):
        return None
    return int(os.environ.get("ORCA_CPU_THREADS", "1"))


def run_settings(device: str) -> dict[str, Any]:
    """Samples and warm-up per device: GPU steps are cheap, the shared 2-core CPU is not."""
    if device.startswith("cuda"):
        return {"repeats": 10, "min_repeats": 5, "max_time_s": 3.0, "warmup": 3, "min_sample_s": 5e-3}
    return {"repeats": 5, "min_repeats": 3, "max_time_s": 2.0, "warmup": 1, "min_sample_s": 2e-3}
