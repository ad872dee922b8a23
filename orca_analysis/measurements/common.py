"""What the timed measurements share: the records mapping a CPU-scaled length back to the study's (metric
seq_len_requested, declared in catalog/declared/common.py)."""

from __future__ import annotations

from ..catalog.declared.common import SEQ_LEN_REQUESTED
from ..catalog.vocabulary import Method
from .recorder import Recorder


def requested_records(rec: Recorder, measured: int, requested: list[int], cap: int) -> None:
    """Where the CPU measured a shorter length than the study asked for: the asked-for lengths.
    `rec` is at the measured workload; `cap` is the measurement's cpu_seq_cap."""
    for s in requested:
        if s != measured:
            rec.add(SEQ_LEN_REQUESTED, s, Method.CPU_SCALED, {"cap": cap})
