"""The metrics of `memory_measured` (measurements/memory_measured): those of `memory` it records too, declared
once, with `memory`'s."""

from __future__ import annotations

from ..specs import Spec
from .memory import METRICS as MEMORY_METRICS

SHARED = ("peak_train", "peak_prefill", "peak_train_phase", "peak_prefill_phase", "peak_train_reserved",
          "peak_prefill_reserved", "memory_rel_error")  # fmt: skip
METRICS = tuple(m for m in MEMORY_METRICS if m.name in SHARED)

SPEC = Spec("memory_measured")
