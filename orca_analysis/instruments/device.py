"""Where and how the timed measurements run: device, dtype, CPU threads, samples, CPU lengths.

On a GPU the study's float32 default becomes bfloat16 (the design's flash path needs 16 bits) and the
study's lengths are kept; on a CPU the lengths are scaled down so the model's longest context maps to
the measurement's cap (its `cpu_seq_cap`), one torch thread, fewer samples.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..catalog.vocabulary import Cause

MIN_CPU_SEQ = 8


def measure_device() -> str:
    """CUDA when present, else CPU; ORCA_DEVICE=cpu forces the CPU on a GPU machine."""
    forced = os.environ.get("ORCA_DEVICE")
    if forced:
        return forced
    return "cuda" if torch.cuda.is_available() else "cpu"


def on_gpu(device: str) -> bool:
    return device.startswith("cuda")


# torch's words for an operator whose CPU build lacks what a GPU has (FlexAttention's backward, torch 2.13)
NO_CPU_BACKWARD = "does not support backward on CPU"


def cpu_cannot(exc: BaseException) -> bool:
    """An operator this CPU cannot run and a GPU can. torch says so only in words: a NotImplementedError with
    NO_CPU_BACKWARD. Read here, where the exception is caught, so that the record it becomes carries the cause
    typed (Cause.NEEDS_GPU)."""
    return isinstance(exc, NotImplementedError) and NO_CPU_BACKWARD in str(exc)


def exception_cause(exc: BaseException) -> Cause:
    """The cause a record of a call that raised `exc` carries (Cause.NONE: its note alone says why)."""
    return Cause.NEEDS_GPU if cpu_cannot(exc) else Cause.NONE


def speed_dtype(study_dtype: str, device: str) -> str:
    """bf16 on GPU when the study keeps the float32 default (the design's flash path needs 16-bit);
    a 16-bit study dtype is kept; on CPU the study's dtype (float32 by default)."""
    if on_gpu(device) and study_dtype == "float32":
        return "bfloat16"
    return study_dtype


def scaled_seq_lens(seq_lens: Sequence[int], max_seq_len: int, device: str, cap: int) -> dict[int, list[int]]:
    """Measured length -> the requested lengths it stands for. GPU: unchanged. CPU: scaled by
    cap / max_seq_len (never up; at least MIN_CPU_SEQ), so the model's longest context maps to
    the cap and the ratios between lengths are kept; each requested length maps on its own, so a
    runner that calls once per workload measures no length twice."""
    out: dict[int, list[int]] = {}
    for s in sorted(set(seq_lens)):
        n = s
        if not on_gpu(device):
            n = max(min(s, MIN_CPU_SEQ), round(s * min(1.0, cap / max_seq_len)))
        out.setdefault(n, []).append(s)
    return out


def cpu_threads(device: str) -> int | None:
    """Intra-op threads for a CPU measurement: ORCA_CPU_THREADS, else 1 (None on GPU: leave torch be).
    One thread because the CPU runs share their cores: on 2 cores with other jobs running, two
    OpenMP threads wait on each other at every barrier and were 6x slower and noisier than one."""
    if on_gpu(device):
        return None
    return int(os.environ.get("ORCA_CPU_THREADS", "1"))


def run_settings(device: str) -> dict[str, Any]:
    """Samples and warm-up per device: GPU steps are cheap, the shared 2-core CPU is not."""
    if on_gpu(device):
        return {"repeats": 10, "min_repeats": 5, "max_time_s": 3.0, "warmup": 3, "min_sample_s": 5e-3}
    return {"repeats": 5, "min_repeats": 3, "max_time_s": 2.0, "warmup": 1, "min_sample_s": 2e-3}


def on_measure_device(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(variant, study, device)` run as `fn(variant, study)` on the measurement device, with its CPU
    thread count (instruments/timing.py torch_threads)."""
    from .timing import torch_threads

    @functools.wraps(fn)
    def run(variant: Any, study: Any) -> Any:
        device = measure_device()
        with torch_threads(cpu_threads(device)):
            return fn(variant, study, device)

    return run
