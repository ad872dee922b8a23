"""What the timed measurements share: the metric mapping a CPU-scaled length back to the study's."""

from __future__ import annotations

from ..results.metrics import Metric
from .recorder import Recorder

SEQ_LEN_REQUESTED = Metric(
    "seq_len_requested",
    "tokens",
    "the study's sequence length a CPU measurement at a shorter length stands for",
    ("cpu_scaled",),
    labels=("cap",),
)


def requested_records(rec: Recorder, measured: int, requested: list[int], cap: int) -> None:
    """Where the CPU measured a shorter length than the study asked for: the asked-for lengths.
    `rec` is at the measured workload; `cap` is the measurement's cpu_seq_cap."""
    for s in requested:
        if s != measured:
            rec.add("seq_len_requested", s, "cpu_scaled", {"cap": cap})
