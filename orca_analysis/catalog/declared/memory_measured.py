"""The metrics of `memory_measured` (measurements/memory_measured): those of `memory` it records too, declared
once, with `memory`'s."""

from __future__ import annotations

from ..specs import Spec
from .memory import METRICS as MEMORY_METRICS

SHARED = (
    "peak_train",
    "peak_prefill",
    "peak_train_phase",
    "peak_prefill_phase",
    "peak_train_reserved",
    "peak_prefill_reserved",
    "memory_rel_error",
)
METRICS = tuple(m for m in MEMORY_METRICS if m.name in SHARED)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    PEAK_TRAIN,
    PEAK_PREFILL,
    PEAK_TRAIN_PHASE,
    PEAK_PREFILL_PHASE,
    PEAK_TRAIN_RESERVED,
    PEAK_PREFILL_RESERVED,
    MEMORY_REL_ERROR,
) = METRICS


SPEC = Spec("memory_measured")
